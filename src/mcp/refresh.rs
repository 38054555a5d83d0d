//! Keeps the agent's tools in step with the MCP servers' tool lists: when a server sends
//! `notifications/tools/list_changed` (or is started again after it died), its tools are
//! listed again and the agent's registry and call grammar are rebuilt and swapped
//! (`Agent::replace_tools`). A running turn keeps the tools it started with; each session's
//! next turn tells the model of the new ones. A rebuild that fails (a tool the grammar cannot
//! take) leaves the tools as they were, with a warning.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::client::McpClients;
use crate::runtime::setup::AgentRuntime;

/// Starts the task that refreshes `agent`'s tools from `clients` (once; later calls find
/// the changes taken and do nothing).
pub fn spawn(clients: Arc<McpClients>, agent: Arc<AgentRuntime>) {
    let Some(mut changes) = clients.take_changes() else {
        return;
    };
    tokio::spawn(async move {
        while let Some(first) = changes.recv().await {
            // Changes that arrived together are one rebuild.
            let mut servers = BTreeSet::from([first]);
            while let Ok(more) = changes.try_recv() {
                servers.insert(more);
            }
            for name in &servers {
                let Some(server) = clients.server(name) else { continue };
                if let Err(e) = server.relist().await {
                    tracing::warn!(server = %name, error = %format!("{e:#}"), "cannot list the MCP server's tools again");
                }
            }
            let (clients, agent) = (Arc::clone(&clients), Arc::clone(&agent));
            // Compiling the grammar is CPU work: off the executor.
            let rebuilt = tokio::task::spawn_blocking(move || rebuild(&clients, &agent)).await;
            match rebuilt {
                Ok(Ok(names)) => {
                    tracing::info!(?servers, tools = ?names, "the agent's tools changed")
                }
                Ok(Err(e)) => tracing::warn!(
                    ?servers,
                    error = %format!("{e:#}"),
                    "the agent keeps its tools: the changed ones could not be registered"
                ),
                Err(e) => tracing::error!(error = %e, "the tool refresh failed"),
            }
        }
    });
}

/// Builds the registry from the servers' current tools and gives it to the agent; the
/// registered names.
fn rebuild(clients: &McpClients, runtime: &AgentRuntime) -> anyhow::Result<Vec<String>> {
    let mut policies = runtime.tool_builder.policy_config().clone();
    clients.require_approvals(&mut policies);
    let registry = runtime.tool_builder.with_policies(policies).build(&clients.tools())?;
    let names = registry.names().map(str::to_owned).collect();
    runtime.agent.replace_tools(registry)?;
    Ok(names)
}
