//! The cluster's PKI, generated in process with rcgen (aws-lc-rs backend, the same crypto
//! provider rustls uses here): a CA, the API server's serving certificate, client certificates
//! for each component, the kubelet's serving certificate and the service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256, RsaKeySize,
};

use crate::error::{Error, Result};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PKCS#8 PEM).
    pub key: PathBuf,
}

/// Every credential the cluster uses, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA; it signs every other certificate and is the client CA of the API server
    /// and the kubelet.
    pub ca: CertFiles,
    /// The CA certificate as PEM text.
    pub ca_pem: String,
    /// kube-apiserver's serving certificate (127.0.0.1, 10.0.0.1, localhost, kubernetes.default...).
    pub apiserver: CertFiles,
    /// `admin`, group `system:masters`.
    pub admin: CertFiles,
    /// `system:kube-controller-manager`.
    pub controller_manager: CertFiles,
    /// `system:kube-scheduler`.
    pub scheduler: CertFiles,
    /// The API server's client certificate towards kubelets (`system:masters`).
    pub apiserver_kubelet_client: CertFiles,
    /// The kubelet's client certificate: `system:node:<node>`, group `system:nodes`.
    pub kubelet_client: CertFiles,
    /// The kubelet's serving certificate (IP 127.0.0.1).
    pub kubelet_serving: CertFiles,
    /// Service-account token signing key (RSA 2048, PKCS#8) and its public key.
    pub service_account_key: PathBuf,
    /// The public half of [`Pki::service_account_key`].
    pub service_account_pub: PathBuf,
}

fn write(dir: &Path, name: &str, contents: &str, private: bool) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::io("write", &path, e))?;
    Ok(path)
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn leaf(
    dir: &Path,
    file: &str,
    issuer: &Issuer<'_, KeyPair>,
    subject: DistinguishedName,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertFiles> {
    let key = KeyPair::generate().map_err(Error::Certificate)?;
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(Error::Certificate)?;
    params.distinguished_name = subject;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer).map_err(Error::Certificate)?;
    Ok(CertFiles {
        cert: write(dir, &format!("{file}.crt"), &cert.pem(), false)?,
        key: write(dir, &format!("{file}.key"), &key.serialize_pem(), true)?,
    })
}

impl Pki {
    /// Generates everything into `dir` (which must exist). `node_name` names the kubelet's
    /// identity.
    pub fn generate(dir: &Path, node_name: &str) -> Result<Pki> {
        let ca_key = KeyPair::generate().map_err(Error::Certificate)?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(Error::Certificate)?;
        ca_params.distinguished_name = name("kube-testbed-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(Error::Certificate)?;
        let ca_pem = ca_cert.pem();
        let ca = CertFiles {
            cert: write(dir, "ca.crt", &ca_pem, false)?,
            key: write(dir, "ca.key", &ca_key.serialize_pem(), true)?,
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let apiserver = leaf(
            dir,
            "apiserver",
            &issuer,
            name("kube-apiserver", None),
            &[
                "127.0.0.1",
                "10.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
            server.clone(),
        )?;
        let admin = leaf(
            dir,
            "admin",
            &issuer,
            name("admin", Some("system:masters")),
            &[],
            client.clone(),
        )?;
        let controller_manager = leaf(
            dir,
            "controller-manager",
            &issuer,
            name("system:kube-controller-manager", None),
            &[],
            client.clone(),
        )?;
        let scheduler = leaf(
            dir,
            "scheduler",
            &issuer,
            name("system:kube-scheduler", None),
            &[],
            client.clone(),
        )?;
        let apiserver_kubelet_client = leaf(
            dir,
            "apiserver-kubelet-client",
            &issuer,
            name("kube-apiserver-kubelet-client", Some("system:masters")),
            &[],
            client.clone(),
        )?;
        let kubelet_client = leaf(
            dir,
            "kubelet-client",
            &issuer,
            name(&format!("system:node:{node_name}"), Some("system:nodes")),
            &[],
            client,
        )?;
        let kubelet_serving = leaf(
            dir,
            "kubelet-serving",
            &issuer,
            name(&format!("system:node:{node_name}"), Some("system:nodes")),
            &["127.0.0.1", "localhost"],
            server,
        )?;

        // RSA: every JWT verifier accepts RS256 service-account tokens.
        let sa = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)
            .map_err(Error::Certificate)?;
        let service_account_key = write(dir, "sa.key", &sa.serialize_pem(), true)?;
        let service_account_pub = write(dir, "sa.pub", &sa.public_key_pem(), false)?;

        Ok(Pki {
            ca,
            ca_pem,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            apiserver_kubelet_client,
            kubelet_client,
            kubelet_serving,
            service_account_key,
            service_account_pub,
        })
    }
}
