use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-ui-gateway",
        "Vigil UI gateway: the web UI, backed by the query and alerting APIs",
        |loader, shutdown| async move {
            let config: vigil_ui_gateway::UiGatewayConfig = loader.section("ui_gateway")?;
            vigil_ui_gateway::run(config, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
