use std::process::ExitCode;

fn main() -> ExitCode {
    vigil_runtime::service::main(
        "vigil-cluster-agent",
        "Vigil cluster agent: watches the Kubernetes API and ships the cluster's inventory, kube-state figures and events to ingest",
        |loader| loader.section::<vigil_agent::cluster::ClusterAgentConfig>("cluster_agent"),
        vigil_agent::cluster::run,
    )
}
