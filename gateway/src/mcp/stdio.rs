//! `payments-gateway mcp`: the MCP server over stdin/stdout, for an agent
//! that starts it as a subprocess. The API key is checked once at start; its
//! scopes hold for the whole session. Logs go to stderr (stdout is the protocol).

use std::time::Duration;

use rmcp::ServiceExt;

use super::PaymentsMcp;
use crate::auth::{Caller, KeyCache};
use crate::config::McpArgs;
use crate::startup::Fallible;

pub async fn run(args: McpArgs) -> Fallible {
    let pool = crate::db::pool(&args.database_url, 4, Duration::from_secs(5))?;
    let caller = Caller::verify(&pool, &KeyCache::new(Duration::ZERO), args.api_key.trim())
        .await
        .map_err(|e| format!("PAYMENTS_API_KEY: {}", e.answer().message))?;
    let server = PaymentsMcp::new(pool, Some(caller)).serve(rmcp::transport::stdio()).await?;
    server.waiting().await?;
    Ok(())
}
