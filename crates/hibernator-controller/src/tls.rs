//! TLS of the runners' gRPC service.
//!
//! Three sources, in order of preference:
//! - **files** (`--grpc-tls-cert`/`--grpc-tls-key`, e.g. a cert-manager Secret mounted by the
//!   chart): re-read every minute, so that a renewed certificate is served without a restart;
//! - **self-managed** (the default): the controller keeps a CA and a serving certificate in a
//!   Secret of its own namespace, creates them when absent and renews them before they expire
//!   (see [`renew`]); every replica serves what the Secret holds, and whichever replica notices
//!   that a renewal is due writes it with optimistic concurrency, so replicas never race;
//! - **plaintext** (`--grpc-plaintext`), only when asked for.
//!
//! The serving certificate is looked up per handshake ([`Serving`]), so a renewal takes effect
//! for new connections while open ones carry on; runner Jobs carry the CA bundle of the moment
//! they were created ([`TrustBundle`]), and a CA is only replaced after its successor has been
//! in that bundle for longer than any runner Job lives.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{debug, info, warn};

use crate::jobs::{MANAGER, labels};

/// Annotation prefix of the values the Secret keeps besides the PEMs.
const ANNOTATION: &str = "hibernator.ardikasaputro.io/";

/// How long certificates live and when they are renewed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lifetimes {
    /// Validity of a CA.
    pub ca: SignedDuration,
    /// Validity of a serving certificate.
    pub cert: SignedDuration,
    /// How long a successor CA is handed to runners before it signs the serving certificate:
    /// longer than any runner Job lives, so that no running Job meets a CA it does not trust.
    pub ca_overlap: SignedDuration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ca: SignedDuration::from_hours(24 * 3650),
            cert: SignedDuration::from_hours(24 * 90),
            ca_overlap: SignedDuration::from_hours(48),
        }
    }
}

impl Lifetimes {
    /// Renew when less than a third of the validity is left.
    fn renew_before(total: SignedDuration) -> SignedDuration {
        total / 3
    }
}

/// A CA: certificate, key and the end of its validity.
#[derive(Debug, Clone, PartialEq)]
pub struct Ca {
    /// Certificate (PEM).
    pub cert: String,
    /// Key (PKCS#8 PEM).
    pub key: String,
    /// End of validity.
    pub not_after: Timestamp,
}

/// What the self-managed Secret holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Material {
    /// The CA that signs the serving certificate.
    pub ca: Ca,
    /// Its successor, handed to runners since `.1`, not yet signing.
    pub next_ca: Option<(Ca, Timestamp)>,
    /// Serving certificate (PEM).
    pub cert: String,
    /// Its key (PKCS#8 PEM).
    pub key: String,
    /// End of the serving certificate's validity.
    pub cert_not_after: Timestamp,
    /// The names it is valid for.
    pub sans: Vec<String>,
}

impl Material {
    /// The CAs runners should trust: the signing CA and its successor, if any.
    pub fn trust_bundle(&self) -> String {
        let mut pem = self.ca.cert.clone();
        if let Some((next, _)) = &self.next_ca {
            pem.push_str(&next.cert);
        }
        pem
    }
}

fn offset(t: Timestamp) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second())
        .with_context(|| format!("{t} is out of range for a certificate"))
}

fn ca_params(not_before: Timestamp, not_after: Timestamp) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hibernator");
    dn.push(
        DnType::CommonName,
        format!("hibernator-controller CA {}", not_before.as_second()),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset(not_before - SignedDuration::from_mins(5))?;
    params.not_after = offset(not_after)?;
    Ok(params)
}

fn new_ca(now: Timestamp, life: SignedDuration) -> Result<Ca> {
    let key = KeyPair::generate().context("failed to generate a CA key")?;
    let not_after = now + life;
    let cert = ca_params(now, not_after)?
        .self_signed(&key)
        .context("failed to sign the CA certificate")?;
    Ok(Ca {
        cert: cert.pem(),
        key: key.serialize_pem(),
        not_after,
    })
}

fn sign_serving(
    ca: &Ca,
    sans: &[String],
    now: Timestamp,
    life: SignedDuration,
) -> Result<(String, String, Timestamp)> {
    let ca_key = KeyPair::from_pem(&ca.key).context("the stored CA key is not a PEM key")?;
    // The issuer's name and key identifier come from its certificate, so the serving
    // certificate chains to exactly the CA runners were given.
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
        .context("the stored CA certificate cannot be read")?;
    let mut params = CertificateParams::new(sans.to_vec())
        .with_context(|| format!("{sans:?} are not valid certificate names"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "hibernator-controller");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let not_after = (now + life).min(ca.not_after);
    params.not_before = offset(now - SignedDuration::from_mins(5))?;
    params.not_after = offset(not_after)?;
    let key = KeyPair::generate().context("failed to generate a serving key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("failed to sign the serving certificate")?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// What the Secret should hold at `now`: `None` when `current` is good as it is.
///
/// - nothing yet, or the CA expired: a new CA and serving certificate;
/// - the CA has less than a third of its life left: a successor CA joins the trust bundle;
/// - the successor has been in the bundle for `ca_overlap`: it signs a new serving certificate
///   and replaces the CA;
/// - the serving certificate has less than a third of its life left, or does not name `sans`:
///   a new one from the current CA.
pub fn renew(
    current: Option<&Material>,
    now: Timestamp,
    sans: &[String],
    life: Lifetimes,
) -> Result<Option<Material>> {
    let Some(current) = current.filter(|m| m.ca.not_after > now) else {
        let ca = new_ca(now, life.ca)?;
        let (cert, key, cert_not_after) = sign_serving(&ca, sans, now, life.cert)?;
        return Ok(Some(Material {
            ca,
            next_ca: None,
            cert,
            key,
            cert_not_after,
            sans: sans.to_vec(),
        }));
    };
    let mut next = current.clone();
    let mut resign = current.sans != sans
        || current.cert_not_after.duration_since(now) < Lifetimes::renew_before(life.cert);
    match &current.next_ca {
        Some((successor, since)) if now.duration_since(*since) >= life.ca_overlap => {
            next.ca = successor.clone();
            next.next_ca = None;
            resign = true;
        }
        Some(_) => {}
        None if current.ca.not_after.duration_since(now) < Lifetimes::renew_before(life.ca) => {
            next.next_ca = Some((new_ca(now, life.ca)?, now));
        }
        None => {}
    }
    if resign {
        let (cert, key, not_after) = sign_serving(&next.ca, sans, now, life.cert)?;
        next.cert = cert;
        next.key = key;
        next.cert_not_after = not_after;
        next.sans = sans.to_vec();
    }
    Ok((next != *current).then_some(next))
}

mod keys {
    pub const CERT: &str = "tls.crt";
    pub const KEY: &str = "tls.key";
    /// The bundle runners trust.
    pub const CA_BUNDLE: &str = "ca.crt";
    pub const CA_CERT: &str = "signing-ca.crt";
    pub const CA_KEY: &str = "signing-ca.key";
    pub const NEXT_CA_CERT: &str = "next-ca.crt";
    pub const NEXT_CA_KEY: &str = "next-ca.key";
}

fn material_from_secret(secret: &Secret) -> Result<Material> {
    let data = secret.data.clone().unwrap_or_default();
    let text = |k: &str| -> Result<String> {
        let v = data
            .get(k)
            .with_context(|| format!("it has no {k:?} entry"))?;
        String::from_utf8(v.0.clone()).with_context(|| format!("its {k:?} entry is not text"))
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let at = |k: &str| -> Result<Timestamp> {
        let v = annotations
            .get(&format!("{ANNOTATION}{k}"))
            .with_context(|| format!("it has no {ANNOTATION}{k} annotation"))?;
        v.parse()
            .with_context(|| format!("its {ANNOTATION}{k} annotation {v:?} is not a time"))
    };
    let next_ca = match data.get(keys::NEXT_CA_CERT) {
        Some(_) => Some((
            Ca {
                cert: text(keys::NEXT_CA_CERT)?,
                key: text(keys::NEXT_CA_KEY)?,
                not_after: at("next-ca-not-after")?,
            },
            at("next-ca-since")?,
        )),
        None => None,
    };
    Ok(Material {
        ca: Ca {
            cert: text(keys::CA_CERT)?,
            key: text(keys::CA_KEY)?,
            not_after: at("ca-not-after")?,
        },
        next_ca,
        cert: text(keys::CERT)?,
        key: text(keys::KEY)?,
        cert_not_after: at("cert-not-after")?,
        sans: annotations
            .get(&format!("{ANNOTATION}sans"))
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

fn secret_from_material(name: &str, m: &Material) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut data = BTreeMap::from([
        (keys::CERT.to_string(), bytes(&m.cert)),
        (keys::KEY.to_string(), bytes(&m.key)),
        (keys::CA_BUNDLE.to_string(), bytes(&m.trust_bundle())),
        (keys::CA_CERT.to_string(), bytes(&m.ca.cert)),
        (keys::CA_KEY.to_string(), bytes(&m.ca.key)),
    ]);
    let mut annotations = BTreeMap::from([
        (
            format!("{ANNOTATION}ca-not-after"),
            m.ca.not_after.to_string(),
        ),
        (
            format!("{ANNOTATION}cert-not-after"),
            m.cert_not_after.to_string(),
        ),
        (format!("{ANNOTATION}sans"), m.sans.join(",")),
    ]);
    if let Some((next, since)) = &m.next_ca {
        data.insert(keys::NEXT_CA_CERT.into(), bytes(&next.cert));
        data.insert(keys::NEXT_CA_KEY.into(), bytes(&next.key));
        annotations.insert(
            format!("{ANNOTATION}next-ca-not-after"),
            next.not_after.to_string(),
        );
        annotations.insert(format!("{ANNOTATION}next-ca-since"), since.to_string());
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_string(),
                MANAGER.to_string(),
            )])),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The serving certificate of the moment, looked up at every handshake.
#[derive(Debug, Clone, Default)]
pub struct Serving(Arc<RwLock<Option<Arc<CertifiedKey>>>>);

impl Serving {
    /// Serves `cert` (a chain, leaf first) with `key` from now on.
    pub fn install(&self, cert: &str, key: &str) -> Result<()> {
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("the serving certificate is not PEM")?;
        if chain.is_empty() {
            bail!("the serving certificate file holds no certificate");
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .context("the serving key is not a PEM private key")?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .context("the serving key does not match the certificate")?;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(certified));
        Ok(())
    }

    /// The rustls server configuration that serves whatever is installed (HTTP/2 only).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self.clone()));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Serving {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The CA bundle runner Jobs are given (PEM), shared with the Job builder.
#[derive(Debug, Clone, Default)]
pub struct TrustBundle(Arc<RwLock<Option<String>>>);

impl TrustBundle {
    /// A bundle that never changes.
    pub fn fixed(pem: Option<String>) -> Self {
        Self(Arc::new(RwLock::new(pem)))
    }

    /// The bundle now.
    pub fn get(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, pem: String) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(pem);
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// The controller-managed certificate: where it is kept and what it must name.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Namespace of the Secret (the controller's).
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// Names the serving certificate is valid for.
    pub sans: Vec<String>,
    /// Validity and renewal.
    pub lifetimes: Lifetimes,
    /// How often the Secret is checked.
    pub check_every: Duration,
}

impl SelfManaged {
    /// Reads the Secret, renews what is due (creating it when absent) and returns what it then
    /// holds. Conflicting writers (other replicas) make it read again.
    pub async fn refresh(&self, client: &kube::Client) -> Result<Material> {
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let pp = PostParams {
            field_manager: Some(MANAGER.into()),
            ..Default::default()
        };
        let what = format!("Secret {}/{}", self.namespace, self.secret);
        for _ in 0..10 {
            let existing = api
                .get_opt(&self.secret)
                .await
                .with_context(|| format!("failed to read {what}"))?;
            let current = match &existing {
                Some(s) => {
                    let ours = s
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(labels::MANAGED_BY))
                        .is_some_and(|m| m == MANAGER);
                    if !ours {
                        bail!(
                            "{what} exists but was not made by {MANAGER} (no {}={MANAGER} label); remove it, or give --grpc-tls-secret another name",
                            labels::MANAGED_BY
                        );
                    }
                    match material_from_secret(s) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            warn!("{what} cannot be used ({e:#}); replacing its certificates");
                            None
                        }
                    }
                }
                None => None,
            };
            let Some(next) = renew(
                current.as_ref(),
                Timestamp::now(),
                &self.sans,
                self.lifetimes,
            )?
            else {
                return current.context("renew keeps only existing material");
            };
            let mut secret = secret_from_material(&self.secret, &next);
            let written = match existing {
                None => api.create(&pp, &secret).await,
                Some(old) => {
                    secret.metadata.resource_version = old.metadata.resource_version;
                    api.replace(&self.secret, &pp, &secret).await
                }
            };
            match written {
                Ok(_) => {
                    info!(secret = %what, cert_not_after = %next.cert_not_after, ca_not_after = %next.ca.not_after,
                        next_ca = next.next_ca.is_some(), "renewed the runners' gRPC certificate");
                    return Ok(next);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e).with_context(|| format!("failed to write {what}")),
            }
        }
        bail!("{what} kept changing under the controller; giving up for now")
    }
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Plaintext HTTP/2 (explicitly asked for).
    Plaintext,
    /// PEM files (a mounted Secret), re-read every minute.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
    },
    /// A Secret the controller keeps.
    SelfManaged(SelfManaged),
}

/// Keeps `serving` (and `bundle`, for self-managed certificates) current until `stop`.
/// The first load happens before this returns; later failures are logged and retried, the
/// previous certificate staying in use.
pub async fn start(
    source: &Source,
    client: &kube::Client,
    serving: &Serving,
    bundle: &TrustBundle,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    match source {
        Source::Plaintext => Ok(()),
        Source::Files { cert, key } => {
            let load = {
                let (cert, key, serving) = (cert.clone(), key.clone(), serving.clone());
                move || -> Result<(String, String)> {
                    let read = |p: &PathBuf| {
                        std::fs::read_to_string(p)
                            .with_context(|| format!("failed to read {}", p.display()))
                    };
                    let pair = (read(&cert)?, read(&key)?);
                    serving.install(&pair.0, &pair.1).with_context(|| {
                        format!(
                            "failed to use {} and {} (--grpc-tls-cert, --grpc-tls-key)",
                            cert.display(),
                            key.display()
                        )
                    })?;
                    Ok(pair)
                }
            };
            let mut last = load()?;
            tokio::spawn(async move {
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                    match load() {
                        Ok(pair) if pair != last => {
                            info!("serving the renewed gRPC certificate from its files");
                            last = pair;
                        }
                        Ok(_) => {}
                        Err(e) => warn!("keeping the current gRPC certificate: {e:#}"),
                    }
                }
            });
            Ok(())
        }
        Source::SelfManaged(sm) => {
            let install = {
                let (serving, bundle) = (serving.clone(), bundle.clone());
                move |m: &Material| -> Result<()> {
                    serving.install(&m.cert, &m.key)?;
                    bundle.set(m.trust_bundle());
                    Ok(())
                }
            };
            // Startup: a few tries (the API server may still be coming up), then fail loudly.
            let mut delay = Duration::from_secs(1);
            let first = loop {
                match sm.refresh(client).await {
                    Ok(m) => break m,
                    Err(e) if delay < Duration::from_secs(16) => {
                        warn!("failed to set up the gRPC certificate, retrying: {e:#}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                    Err(e) => {
                        return Err(e.context("failed to set up the runners' gRPC certificate"));
                    }
                }
            };
            install(&first)?;
            info!(secret = %format!("{}/{}", sm.namespace, sm.secret), sans = ?sm.sans,
                cert_not_after = %first.cert_not_after, "serving gRPC with the controller's own certificate");
            let (sm, client) = (sm.clone(), client.clone());
            let mut last = first;
            tokio::spawn(async move {
                tokio::pin!(stop);
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(sm.check_every) => {}
                    }
                    match sm.refresh(&client).await {
                        Ok(m) if m != last => match install(&m) {
                            Ok(()) => {
                                info!(cert_not_after = %m.cert_not_after, "serving the renewed gRPC certificate");
                                last = m;
                            }
                            Err(e) => warn!("keeping the current gRPC certificate: {e:#}"),
                        },
                        Ok(_) => {}
                        Err(e) => warn!("keeping the current gRPC certificate: {e:#}"),
                    }
                }
            });
            Ok(())
        }
    }
}

/// The TLS connections accepted on `listener`. Handshakes run concurrently, each bounded to
/// ten seconds, so a slow or plaintext client holds up nobody; failed ones are dropped (a
/// plaintext client sees its connection closed).
pub fn incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        warn!("failed to accept a gRPC connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => break,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        debug!(%peer, "refused a gRPC connection: TLS handshake failed: {e}")
                    }
                    Err(_) => {
                        debug!(%peer, "refused a gRPC connection: no TLS handshake within 10 s")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sans() -> Vec<String> {
        vec![
            "hibernator.hibernator-system.svc".into(),
            "127.0.0.1".into(),
        ]
    }

    /// Whether `cert` chains to one of the CAs in `bundle` and names `name` at `now`, checked
    /// by webpki (what rustls clients, the runner's among them, use).
    fn trusted(bundle: &str, cert: &str, name: &str, now: Timestamp) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let now = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            now.as_second() as u64,
        ));
        verifier
            .verify_server_cert(
                &leaf,
                &[],
                &rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
                &[],
                now,
            )
            .is_ok()
    }

    #[test]
    fn a_new_secret_holds_a_ca_and_a_certificate_it_signed() {
        let now = at("2026-12-01T00:00:00Z");
        let m = renew(None, now, &sans(), Lifetimes::default())
            .unwrap()
            .unwrap();
        for name in ["hibernator.hibernator-system.svc", "127.0.0.1"] {
            assert!(trusted(&m.trust_bundle(), &m.cert, name, now), "{name}");
        }
        assert!(!trusted(
            &m.trust_bundle(),
            &m.cert,
            "elsewhere.example",
            now
        ));
        // A stranger's CA is not trusted.
        let other = renew(None, now, &sans(), Lifetimes::default())
            .unwrap()
            .unwrap();
        assert!(!trusted(&other.trust_bundle(), &m.cert, "127.0.0.1", now));
        // Nothing is due the next day; the Secret survives a round trip.
        let back = material_from_secret(&secret_from_material("s", &m)).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            renew(
                Some(&back),
                now + SignedDuration::from_hours(24),
                &sans(),
                Lifetimes::default()
            )
            .unwrap(),
            None
        );
    }

    #[test]
    fn the_serving_certificate_is_renewed_with_a_third_of_its_life_left_by_the_same_ca() {
        let life = Lifetimes::default();
        let t0 = at("2026-12-01T00:00:00Z");
        let m = renew(None, t0, &sans(), life).unwrap().unwrap();
        let t1 = t0 + SignedDuration::from_hours(24 * 61);
        let r = renew(Some(&m), t1, &sans(), life).unwrap().unwrap();
        assert_ne!(r.cert, m.cert);
        assert_eq!(r.ca, m.ca);
        assert_eq!(r.trust_bundle(), m.trust_bundle(), "runners keep their CA");
        assert!(trusted(&m.trust_bundle(), &r.cert, "127.0.0.1", t1));
        // New names make a new certificate at once.
        let more = vec!["other.svc".to_string()];
        let n = renew(Some(&m), t0, &more, life).unwrap().unwrap();
        assert!(trusted(&n.trust_bundle(), &n.cert, "other.svc", t0));
    }

    #[test]
    fn a_ca_is_replaced_only_after_its_successor_was_trusted_for_the_overlap() {
        let life = Lifetimes {
            ca: SignedDuration::from_hours(24 * 30),
            cert: SignedDuration::from_hours(24 * 9),
            ca_overlap: SignedDuration::from_hours(48),
        };
        let t0 = at("2026-12-01T00:00:00Z");
        let m = renew(None, t0, &sans(), life).unwrap().unwrap();
        // Day 21: a third of the CA's life left; its successor joins the bundle, still unused.
        let t1 = t0 + SignedDuration::from_hours(24 * 21);
        let staged = renew(Some(&m), t1, &sans(), life).unwrap().unwrap();
        let (next, since) = staged.next_ca.clone().unwrap();
        assert_eq!(since, t1);
        assert_eq!(staged.ca, m.ca);
        assert!(staged.trust_bundle().contains(&next.cert));
        assert!(staged.trust_bundle().contains(&m.ca.cert));
        // A runner created before the staging trusts the serving certificate all along.
        assert!(trusted(&m.trust_bundle(), &staged.cert, "127.0.0.1", t1));
        // One day later nothing changes; two days later the successor signs.
        let t2 = t1 + SignedDuration::from_hours(24);
        assert_eq!(renew(Some(&staged), t2, &sans(), life).unwrap(), None);
        let t3 = t1 + SignedDuration::from_hours(48);
        let rolled = renew(Some(&staged), t3, &sans(), life).unwrap().unwrap();
        assert_eq!(rolled.ca, next);
        assert_eq!(rolled.next_ca, None);
        // A runner created during the overlap trusts the new certificate.
        assert!(trusted(
            &staged.trust_bundle(),
            &rolled.cert,
            "127.0.0.1",
            t3
        ));
        assert!(!trusted(&m.trust_bundle(), &rolled.cert, "127.0.0.1", t3));
        // An expired CA (a controller off for months) starts over.
        let late = t0 + SignedDuration::from_hours(24 * 365);
        let fresh = renew(Some(&m), late, &sans(), life).unwrap().unwrap();
        assert_ne!(fresh.ca, m.ca);
        assert!(trusted(
            &fresh.trust_bundle(),
            &fresh.cert,
            "127.0.0.1",
            late
        ));
    }
}
