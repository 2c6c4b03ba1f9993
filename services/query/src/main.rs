use std::process::ExitCode;

use vigil_storage::{Deployment, StorageConfig};

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-query",
        "Vigil query API: serves stored telemetry over gRPC; the only reader",
        |loader, shutdown| async move {
            let config: vigil_query::QueryConfig = loader.section("query")?;
            let storage: StorageConfig = loader.section("storage")?;
            let store = vigil_storage::open(
                &storage,
                &loader.data_dir()?,
                Deployment::Standalone { service: "query" },
            )?;
            vigil_query::run(config, store, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
