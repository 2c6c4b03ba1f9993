use std::process::ExitCode;

use vigil_storage::{Deployment, StorageConfig};

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-query",
        "Vigil query API: serves stored telemetry over gRPC; the only reader",
        |loader| {
            let config: vigil_query::QueryConfig = loader.section("query")?;
            let storage: StorageConfig = loader.section("storage")?;
            Ok((config, storage, loader.data_dir()?))
        },
        |(config, storage, data_dir), shutdown| async move {
            let store = vigil_storage::open(
                &storage,
                &data_dir,
                Deployment::Standalone { service: "query" },
            )
            .await?;
            vigil_query::run(config, store, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
