use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-agent",
        "Vigil node agent: observes this host and ships its figures to ingest",
        |loader| loader.section::<vigil_agent::AgentConfig>("agent"),
        vigil_agent::run,
    )
}
