use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-ui-gateway",
        "Vigil UI gateway: the web UI, backed by the query and alerting APIs",
        |loader| loader.section::<vigil_ui_gateway::UiGatewayConfig>("ui_gateway"),
        vigil_ui_gateway::run,
    )
}
