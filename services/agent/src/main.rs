use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-agent",
        "Vigil node agent: observes this host and ships its figures to ingest",
        |loader, shutdown| async move {
            let config: vigil_agent::AgentConfig = loader.section("agent")?;
            vigil_agent::run(config, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
