use std::process::ExitCode;

use vigil_runtime::auth::{ApiKeys, ProjectConfig};
use vigil_storage::{Deployment, StorageConfig};

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-ingest",
        "Vigil ingest gateway: stores agent batches (and, later, OTLP and remote_write); the only writer",
        |loader| {
            let config: vigil_ingest::IngestConfig = loader.section("ingest")?;
            let storage: StorageConfig = loader.section("storage")?;
            let projects: Vec<ProjectConfig> = loader.section("projects")?;
            let keys = ApiKeys::new(&projects)?;
            Ok((config, storage, keys, loader.data_dir()?))
        },
        |(config, storage, keys, data_dir), shutdown| async move {
            let store = vigil_storage::open(
                &storage,
                &data_dir,
                Deployment::Standalone { service: "ingest" },
            )
            .await?;
            // Split deployments: ingest, the only writer, runs storage upkeep
            // (retention); every step is idempotent, so replicas may overlap.
            tokio::spawn(vigil_storage::run_maintenance(
                store.clone(),
                std::time::Duration::from_secs(300),
                shutdown.clone(),
            ));
            vigil_ingest::run(config, store, keys, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
