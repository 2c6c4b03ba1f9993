use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-heartbeat",
        "Vigil heartbeat monitor: raises the alarm when a cluster or a job stops pinging",
        |loader, shutdown| async move {
            let config: vigil_heartbeat::HeartbeatConfig = loader.section("heartbeat")?;
            vigil_heartbeat::run(config, &loader.data_dir()?, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
