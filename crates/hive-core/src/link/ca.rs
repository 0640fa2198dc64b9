//! The hive's certificate authority: made once, kept 0600 in the state
//! dir; it signs core's server certificate at every start and one client
//! certificate per agent container.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use hive_proto::AgentName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The CA's private key, PKCS#8 PEM, 0600.
const KEY_FILE: &str = "ca-key.pem";
/// The CA's certificate, PEM.
const CERT_FILE: &str = "ca.pem";

/// One certificate with its key, as files and as rustls takes them.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: PrivateKeyDer<'static>,
}

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM), which every credential carries.
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca")
    }
}

/// The CA's fixed subject: re-made identically when the key is loaded,
/// so certificates it signs chain to the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "hyperhive link CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

impl Ca {
    /// Loads the CA from `dir`, or makes one there (the dir 0700, the key
    /// 0600, both the daemon's).
    pub fn open(dir: &Path) -> anyhow::Result<Ca> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod {}", dir.display()))?;
        let (key_path, cert_path) = (dir.join(KEY_FILE), dir.join(CERT_FILE));
        let params = ca_params();
        let (key, cert_pem) = match std::fs::read_to_string(&key_path) {
            Ok(pem) => {
                let key = KeyPair::from_pem(&pem)
                    .with_context(|| format!("read the CA key {}", key_path.display()))?;
                let cert = std::fs::read_to_string(&cert_path)
                    .with_context(|| format!("read {}", cert_path.display()))?;
                (key, cert)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().context("generate the CA key")?;
                let cert = params
                    .self_signed(&key)
                    .context("sign the CA certificate")?;
                write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
                write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
                (key, cert.pem())
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", key_path.display())),
        };
        use rustls::pki_types::pem::PemObject;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .with_context(|| format!("parse {}", cert_path.display()))?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_der,
        })
    }

    /// Core's server certificate, for [`hive_proto::link::SERVER_NAME`].
    pub fn server(&self) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::new(vec![hive_proto::link::SERVER_NAME.to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, hive_proto::link::SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(&params)
    }

    /// A client certificate naming `agent` (the name is for people: core
    /// knows the agent by the certificate itself).
    pub fn client(&self, agent: &AgentName) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("agent {agent}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        // A fresh serial, so two certificates of one agent never coincide.
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| anyhow::anyhow!("random serial: {e}"))?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        self.sign(&params)
    }

    fn sign(&self, params: &CertificateParams) -> anyhow::Result<Issued> {
        let key = KeyPair::generate().context("generate a key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .context("sign a certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }

    /// The only root a link trusts.
    pub fn roots(&self) -> anyhow::Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .context("the CA certificate")?;
        Ok(Arc::new(roots))
    }
}

/// Writes a new file with `mode` (a previous one is replaced, never
/// written through: the dir is core's own, 0700).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))
}
