use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-alerting",
        "Vigil inspection/alerting worker: finds problems through the query API and records incidents",
        |loader| {
            let config: vigil_alerting::AlertingConfig = loader.section("alerting")?;
            let access: vigil_runtime::auth::AccessConfig = loader.section("access")?;
            Ok((config, access, loader.data_dir()?))
        },
        |(config, access, data_dir), shutdown| async move {
            vigil_alerting::run(config, &access, &data_dir, shutdown).await
        },
    )
}
