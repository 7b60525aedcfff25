//! One delivery attempt: sign with the attempt's timestamp, POST, classify the answer.

use std::time::Duration;

use chrono::Utc;

use super::retry::{Verdict, classify, parse_retry_after};
use crate::notify::Target;
use crate::notify::outbox::Message;

/// One attempt: sign with the attempt's timestamp, POST, classify.
pub(super) async fn send(client: &reqwest::Client, target: &Target, message: &Message) -> Verdict {
    let timestamp = Utc::now().timestamp();
    let signature = target
        .signer
        .signature(&message.id, timestamp, message.body.as_bytes());
    let sent = client
        .post(&target.config.url)
        .timeout(target.config.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(message.body.clone())
        .send()
        .await;
    match sent {
        Ok(response) => {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()));
            classify(response.status().as_u16(), retry_after)
        }
        Err(e) => Verdict::Retry {
            error: describe(e, target.config.timeout),
            retry_after: None,
            breaker: true,
        },
    }
}

/// The error in words, without the URL (it may carry a token) and never the body.
fn describe(error: reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!(
            "timed out after {}",
            crate::schedule::format_duration(timeout)
        );
    }
    let error = error.without_url();
    let mut text = if error.is_connect() {
        "connection failed".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
