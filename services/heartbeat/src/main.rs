use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-heartbeat",
        "Vigil heartbeat monitor: raises the alarm when a cluster or a job stops pinging",
        |loader| {
            let config: vigil_heartbeat::HeartbeatConfig = loader.section("heartbeat")?;
            let access: vigil_runtime::auth::AccessConfig = loader.section("access")?;
            Ok((config, access, loader.data_dir()?))
        },
        |(config, access, data_dir), shutdown| async move {
            vigil_heartbeat::run(config, &access, &data_dir, shutdown).await
        },
    )
}
