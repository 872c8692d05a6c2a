//! Wake-ups from the database: a connection that LISTENs on one channel and
//! wakes a worker on each NOTIFY, reconnecting after a failure. Workers also
//! run on a timer: on Citus a delegated call's NOTIFY stays on its worker node.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

pub async fn listen(database_url: String, channel: &'static str, wake: Arc<Notify>) {
    loop {
        match tokio_postgres::connect(&database_url, NoTls).await {
            Ok((client, mut connection)) => {
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let wake = wake.clone();
                tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = done_tx.send(());
                });
                if client.batch_execute(&format!("LISTEN {channel}")).await.is_ok() {
                    let _ = done_rx.await;
                }
                drop(client);
            }
            Err(e) => tracing::warn!(channel, error = %e, "LISTEN connection failed; polling only until it is back"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
