use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-alerting",
        "Vigil inspection/alerting worker: finds problems through the query API and records incidents",
        |loader| {
            let config: vigil_alerting::AlertingConfig = loader.section("alerting")?;
            Ok((config, loader.data_dir()?))
        },
        |(config, data_dir), shutdown| async move {
            vigil_alerting::run(config, &data_dir, shutdown).await
        },
    )
}
