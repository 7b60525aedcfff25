//! SDK errors mapped into [`backend::Error`](super::super::Error), with messages an operator
//! can act on.
//!
//! Throttling, 5xx answers, timeouts and connection failures are
//! [`ErrorStatus::Temporary`] (the SDK has already retried them with backoff; the daemon
//! retries the rotation later); everything else is permanent. The raw HTTP response is
//! dropped: only AWS's error code and message are kept, and neither ever holds a value.

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::super::{Error, ErrorStatus};

/// One failed SDK call: the operation, AWS's error code and message.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed: {code}: {message}")]
pub(crate) struct AwsError {
    operation: &'static str,
    code: String,
    message: String,
}

/// What kind of failure an SDK error is, for the callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `ResourceNotFoundException`.
    NotFound,
    /// `ResourceExistsException`.
    Exists,
    /// `InvalidParameterException` (e.g. a stage move whose `RemoveFromVersionId` is stale).
    InvalidParameter,
    /// The caller is not allowed, or its credentials are not valid.
    AccessDenied,
    /// KMS refused to encrypt or decrypt.
    Kms,
    /// Throttling, 5xx, timeouts, connection failures.
    Transient,
    /// Anything else.
    Other,
}

/// A classified SDK error.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: Kind,
    pub(crate) error: AwsError,
}

const ACCESS_CODES: &[&str] = &[
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
    "ExpiredToken",
    "SignatureDoesNotMatch",
    "MissingAuthenticationToken",
];
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "InternalServiceError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

impl Failure {
    /// Classifies `err` from `operation`.
    pub(crate) fn new<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let (kind, code, message) = match &err {
            SdkError::ServiceError(context) => {
                // An answer the SDK could not parse has no code: its HTTP status stands in.
                let code = context.err().code().map_or_else(
                    || format!("HTTP {}", context.raw().status().as_u16()),
                    str::to_owned,
                );
                let message = context
                    .err()
                    .message()
                    .unwrap_or("no message in the response")
                    .to_owned();
                let kind = match code.as_str() {
                    "ResourceNotFoundException" => Kind::NotFound,
                    "ResourceExistsException" => Kind::Exists,
                    "InvalidParameterException" => Kind::InvalidParameter,
                    "DecryptionFailure" | "EncryptionFailure" => Kind::Kms,
                    c if ACCESS_CODES.contains(&c) => Kind::AccessDenied,
                    c if THROTTLING_CODES.contains(&c) => Kind::Transient,
                    _ => Kind::Other,
                };
                (kind, code, message)
            }
            SdkError::TimeoutError(_) => (
                Kind::Transient,
                "Timeout".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
            SdkError::DispatchFailure(_) => (
                Kind::Transient,
                "DispatchFailure".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
            SdkError::ResponseError(_) => (
                Kind::Transient,
                "ResponseError".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
            _ => (
                Kind::Other,
                "ConstructionFailure".to_owned(),
                DisplayErrorContext(&err).to_string(),
            ),
        };
        // An answer whose code we did not recognise still says something by its status.
        let kind = match err.raw_response().map(|r| r.status().as_u16()) {
            Some(500..=599) if kind == Kind::Other => Kind::Transient,
            Some(403) if kind == Kind::Other => Kind::AccessDenied,
            _ => kind,
        };
        Self {
            kind,
            error: AwsError {
                operation,
                code,
                message,
            },
        }
    }

    /// The backend error for a failure on `target` (e.g. `secret "prod/db"`).
    pub(crate) fn into_backend(self, backend: &str, target: &str) -> Error {
        let backend = backend.to_owned();
        let operation = self.error.operation;
        let aws = &self.error.message;
        match self.kind {
            Kind::NotFound => Error::NotFound {
                backend,
                what: target.to_owned(),
            },
            Kind::AccessDenied => Error::PermissionDenied {
                backend,
                message: format!(
                    "secretsmanager:{operation} on {target} was refused ({code}: {aws}); \
                     allow secretsmanager:{operation} on this secret's ARN to the identity rekeyd \
                     runs as, or check its credentials",
                    code = self.error.code
                ),
            },
            Kind::Kms => Error::Generic {
                backend,
                message: format!(
                    "{operation} on {target}: KMS could not {what} the value ({aws}); the \
                     identity rekeyd runs as needs kms:GenerateDataKey and kms:Decrypt on the \
                     secret's KMS key, and the key must be enabled",
                    what = if self.error.code == "DecryptionFailure" {
                        "decrypt"
                    } else {
                        "encrypt"
                    }
                ),
                status: ErrorStatus::Permanent,
                source: Some(Box::new(self.error)),
            },
            Kind::Transient => Error::Generic {
                backend,
                message: format!(
                    "{operation} on {target} failed after retries with backoff (throttled, \
                     timed out or AWS unavailable); the rotation will be retried"
                ),
                status: ErrorStatus::Temporary,
                source: Some(Box::new(self.error)),
            },
            Kind::Exists | Kind::InvalidParameter | Kind::Other => Error::Generic {
                backend,
                message: format!("{operation} on {target} failed"),
                status: ErrorStatus::Permanent,
                source: Some(Box::new(self.error)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service(code: &str, status: u16) -> Failure {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("User: arn:aws:iam::123456789012:user/ci is not authorized")
            .build();
        let err = PutSecretValueError::generic(meta);
        let raw = Response::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        Failure::new("PutSecretValue", SdkError::service_error(err, raw))
    }

    #[test]
    fn codes_map_to_kinds_and_statuses() {
        assert_eq!(
            service("ResourceNotFoundException", 400).kind,
            Kind::NotFound
        );
        assert_eq!(service("ResourceExistsException", 400).kind, Kind::Exists);
        assert_eq!(service("ThrottlingException", 400).kind, Kind::Transient);
        assert_eq!(service("SomethingNew", 503).kind, Kind::Transient);
        assert_eq!(service("DecryptionFailure", 400).kind, Kind::Kms);
        assert_eq!(service("SomethingNew", 400).kind, Kind::Other);
        let e = service("ThrottlingException", 400).into_backend("aws", "secret \"a\"");
        assert!(e.is_temporary(), "{e}");
        let e = service("LimitExceededException", 400).into_backend("aws", "secret \"a\"");
        assert!(!e.is_temporary(), "{e}");
    }

    #[test]
    fn access_denied_names_the_action_and_the_target() {
        let e = service("AccessDeniedException", 400).into_backend("aws", "secret \"prod/db\"");
        let text = e.to_string();
        assert!(matches!(e, Error::PermissionDenied { .. }), "{text}");
        assert!(text.contains("secretsmanager:PutSecretValue"), "{text}");
        assert!(text.contains("secret \"prod/db\""), "{text}");
        assert!(text.contains("arn:aws:iam::123456789012:user/ci"), "{text}");
    }

    #[test]
    fn kms_failures_say_what_the_key_needs() {
        let text = service("EncryptionFailure", 400)
            .into_backend("aws", "secret \"a\"")
            .to_string();
        assert!(text.contains("kms:GenerateDataKey"), "{text}");
    }
}
