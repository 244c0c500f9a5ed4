//! S3 (and S3-compatible stores) as a target, with aws-sdk-s3. An object
//! that fits in one part is one PUT; a longer stream is a multipart upload
//! (`multipart`), completed only once the whole stream was read, so
//! `put` stays atomic.

mod multipart;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode,
    ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};

use crate::config::S3TargetConfig;
use crate::error::{Error, Result};
use crate::target::{ByteReader, ObjectInfo, RangeRead, RangedReads, StorageTarget};

use multipart::{part_size, read_part};

pub struct S3Target {
    name: String,
    bucket: String,
    /// `""` or `"prefix/"`.
    prefix: String,
    client: Client,
    config: S3TargetConfig,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl S3Target {
    pub async fn new(name: &str, config: &S3TargetConfig) -> Result<Self> {
        // rustls with ring: one TLS stack and one crypto library in the
        // binary (the SDK's default client would add aws-lc-rs).
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .region(Region::new(config.region.clone()))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(config.request_timeout_secs))
                    .build(),
            );
        if let Some(profile) = &config.profile {
            loader = loader.profile_name(profile);
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                config.session_token.clone(),
                None,
                "steward-config",
            ));
        }
        let shared = loader.load().await;
        // Request checksums follow `checksum`. Response checksum validation
        // is always off: Steward checks the sha256 of every stored object
        // against the manifest end to end, and the SDK's validation breaks
        // downloads of multi-part objects on stores that return the
        // composite checksum (the checksum of the parts' checksums) without
        // S3's `-<parts>` suffix (moto 5.1 does): the SDK then compares it
        // with the checksum of the whole body and fails the stream.
        let request_checksum = if config.checksum == "when_required" {
            RequestChecksumCalculation::WhenRequired
        } else {
            RequestChecksumCalculation::WhenSupported
        };
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .request_checksum_calculation(request_checksum)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let prefix = config.prefix.trim_matches('/');
        Ok(S3Target {
            name: name.to_string(),
            bucket: config.bucket.clone(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            client: Client::from_conf(builder.build()),
            config: config.clone(),
        })
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::target(&self.name, self.location(), message)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn relative_key<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(&self.prefix)
    }

    fn checksums(&self) -> bool {
        self.config.checksum != "when_required"
    }

    fn lock_until(&self) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        let mode = self.config.object_lock_mode.as_deref()?;
        let days = self.config.object_lock_days?;
        let until = Utc::now() + chrono::Duration::days(i64::from(days));
        Some((
            ObjectLockMode::from(mode),
            aws_sdk_s3::primitives::DateTime::from_secs(until.timestamp()),
        ))
    }

    /// Sets the configured retention on a completed multi-part object that
    /// does not carry one: S3 applies the Object Lock headers of
    /// CreateMultipartUpload, but some S3-compatible stores (moto among
    /// them) drop them, which would leave the largest objects unprotected.
    async fn ensure_retention(&self, key: &str, full: &str) -> Result<()> {
        let Some((mode, until)) = self.lock_until() else {
            return Ok(());
        };
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| {
                self.err(format!(
                    "checking the Object Lock retention of {key}: {}",
                    describe(&e)
                ))
            })?;
        if head.object_lock_retain_until_date().is_some() {
            return Ok(());
        }
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(full)
            .retention(
                ObjectLockRetention::builder()
                    .mode(ObjectLockRetentionMode::from(mode.as_str()))
                    .retain_until_date(until)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                self.err(format!(
                    "setting the Object Lock retention of {key}: {}; is Object Lock enabled on bucket {}?",
                    describe(&e),
                    self.bucket
                ))
            })?;
        Ok(())
    }

    async fn put_single(&self, key: &str, full: &str, data: Bytes) -> Result<u64> {
        let len = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(full)
            .body(ByteStream::from(data));
        if let Some(sc) = &self.config.storage_class {
            req = req.storage_class(StorageClass::from(sc.as_str()));
        }
        if let Some(sse) = &self.config.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(sse.as_str()));
        }
        if let Some(kms) = &self.config.sse_kms_key_id {
            req = req.ssekms_key_id(kms);
        }
        if let Some((mode, until)) = self.lock_until() {
            req = req
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        if self.checksums() {
            req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        req.send()
            .await
            .map_err(|e| self.err(format!("uploading {key}: {}", describe(&e))))?;
        Ok(len)
    }
}

#[async_trait]
impl StorageTarget for S3Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn put(&self, key: &str, mut body: ByteReader) -> Result<u64> {
        let full = self.full_key(key);
        let first_size = part_size(self.config.part_size_bytes, 1) as usize;
        let mut first = BytesMut::new();
        read_part(&mut body, &mut first, first_size)
            .await
            .map_err(|e| {
                self.err(format!(
                    "uploading {key}: {e}; nothing was stored under this key"
                ))
            })?;
        if first.len() < first_size {
            // The whole object fits in one part: one PUT.
            return self.put_single(key, &full, first.freeze()).await;
        }
        self.put_multipart(key, &full, first, &mut body).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader> {
        let full = self.full_key(key);
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(resp) => Ok(Box::pin(resp.body.into_async_read())),
            Err(e) => {
                if e.as_service_error()
                    .map(|s| s.is_no_such_key())
                    .unwrap_or(false)
                {
                    Err(Error::NotFound(format!(
                        "target {} ({}): no object {key}",
                        self.name,
                        self.location()
                    )))
                } else {
                    Err(self.err(format!("downloading {key}: {}", describe(&e))))
                }
            }
        }
    }

    fn ranged_reads(&self) -> Option<RangedReads> {
        (self.config.restore_concurrency > 1).then_some(RangedReads {
            part_size: self.config.restore_part_size_bytes,
            concurrency: self.config.restore_concurrency,
        })
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<RangeRead> {
        let full = self.full_key(key);
        let asked = format!("bytes={}-{}", range.start, range.end.saturating_sub(1));
        let resp = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .range(&asked)
            .send()
            .await
        {
            Ok(resp) => resp,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                return Err(Error::NotFound(format!(
                    "target {} ({}): no object {key}",
                    self.name,
                    self.location()
                )))
            }
            Err(e) => {
                return Err(self.err(format!("downloading {asked} of {key}: {}", describe(&e))))
            }
        };
        // A store that ignores Range answers 200 with the whole object:
        // take only what Content-Range says was sent.
        let got = resp.content_range().unwrap_or("").to_string();
        match parse_content_range(&got) {
            Some((first, last, total)) if first == range.start && last + 1 == range.end => {
                Ok(RangeRead {
                    body: Box::pin(resp.body.into_async_read()),
                    object_size: total,
                })
            }
            _ => Err(self.err(format!(
                "downloading {asked} of {key}: the store answered Content-Range {got:?}; it does not serve byte ranges: set restore_concurrency = 1"
            ))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.err(format!("listing {prefix:?}: {}", describe(&e))))?;
            for o in resp.contents() {
                let Some(k) = o.key() else { continue };
                let Some(rel) = self.relative_key(k) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: rel.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
            match (resp.is_truncated(), resp.next_continuation_token()) {
                (Some(true), Some(t)) => token = Some(t.to_string()),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.err(format!("deleting {key}: {}", describe(&e))))?;
        Ok(())
    }

    async fn locked_until(&self, key: &str) -> Result<Option<(String, DateTime<Utc>)>> {
        let head = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(head) => head,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(None),
            Err(e) => {
                return Err(self.err(format!(
                    "reading the Object Lock retention of {key}: {}",
                    describe(&e)
                )))
            }
        };
        let until = head
            .object_lock_retain_until_date()
            .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()));
        Ok(match (head.object_lock_mode(), until) {
            (Some(mode), Some(until)) if until > Utc::now() => {
                Some((mode.as_str().to_string(), until))
            }
            _ => None,
        })
    }

    async fn cleanup_incomplete(
        &self,
        prefix: &str,
        older_than: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (key, upload_id) in self.list_incomplete(prefix, older_than).await? {
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(self.full_key(&key))
                .upload_id(&upload_id)
                .send()
                .await
                .map_err(|e| {
                    self.err(format!(
                        "aborting the unfinished upload of {key}: {}",
                        describe(&e)
                    ))
                })?;
            removed.push(format!("unfinished multipart upload of {key}"));
        }
        Ok(removed)
    }
}

/// `bytes FIRST-LAST/TOTAL` -> (first, last, total).
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, total) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        total.trim().parse().ok()?,
    );
    (first <= last && last < total).then_some((first, last, total))
}

/// One line for an SDK error: S3's own code and message when the store
/// answered, else the chain of causes (connection refused, timeout...).
/// The SDK's `Debug`/`DisplayErrorContext` form dumps the whole raw
/// response, which buries the cause an on-call engineer needs.
fn describe<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    if let SdkError::ServiceError(service) = e {
        let err = service.err();
        match (err.code(), err.message()) {
            (Some(code), Some(message)) => return format!("{code}: {message}"),
            (Some(code), None) => return code.to_string(),
            _ => return cause_chain(err),
        }
    }
    cause_chain(e)
}

fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range_is_parsed_strictly() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 90-99/100"), Some((90, 99, 100)));
        assert_eq!(parse_content_range("bytes 90-100/100"), None);
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range(""), None);
        assert_eq!(parse_content_range("bytes 5-4/100"), None);
    }
}
