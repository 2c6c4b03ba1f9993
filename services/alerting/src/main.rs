use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-alerting",
        "Vigil inspection/alerting worker: finds problems through the query API and records incidents",
        |loader, shutdown| async move {
            let config: vigil_alerting::AlertingConfig = loader.section("alerting")?;
            vigil_alerting::run(config, &loader.data_dir()?, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
