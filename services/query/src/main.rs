use std::process::ExitCode;

use vigil_runtime::auth::{AccessConfig, ApiKeys, ProjectConfig};
use vigil_storage::{Deployment, StorageConfig};

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-query",
        "Vigil query API: serves stored telemetry over gRPC and a Prometheus-compatible HTTP API; the only reader",
        |loader| {
            let config: vigil_query::QueryConfig = loader.section("query")?;
            let storage: StorageConfig = loader.section("storage")?;
            let projects: Vec<ProjectConfig> = loader.section("projects")?;
            let access: AccessConfig = loader.section("access")?;
            let keys = ApiKeys::new(&projects)?.with_gateways(&access)?;
            Ok((config, storage, keys, loader.data_dir()?))
        },
        |(config, storage, keys, data_dir), shutdown| async move {
            let store = vigil_storage::open(
                &storage,
                &data_dir,
                Deployment::Standalone { service: "query" },
            )
            .await?;
            vigil_query::run(config, store, keys, shutdown).await?;
            anyhow::Ok(())
        },
    )
}
