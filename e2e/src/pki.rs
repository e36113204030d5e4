//! Keys and certificates of the local control plane, generated fresh for every run: a cluster CA,
//! the API server's serving certificate, client certificates for the administrator and the
//! controller manager, and the service-account signing key pair. Nothing is reused between runs
//! and nothing leaves the run directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// PEM files of one identity: a certificate and its private key.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate, PEM.
    pub cert: PathBuf,
    /// The private key, PEM (PKCS#8).
    pub key: PathBuf,
}

/// Every key and certificate the control plane needs, written under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate (PEM); it signs every other certificate.
    pub ca_cert: PathBuf,
    /// The CA's private key.
    pub ca_key: PathBuf,
    /// The API server's serving certificate (SANs: loopback and the in-cluster names).
    pub apiserver: CertFiles,
    /// A `system:masters` client certificate for tests, the demo and the node agent.
    pub admin: CertFiles,
    /// The controller manager's client certificate (`system:kube-controller-manager`).
    pub controller_manager: CertFiles,
    /// The service-account token signing key (private, PKCS#8).
    pub service_account_key: PathBuf,
    /// The service-account token verification key (public).
    pub service_account_pub: PathBuf,
}

fn pki_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |source| Error::Pki { what, source }
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(Error::io("writing", path))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

impl Pki {
    /// Generates every key and certificate into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;

        let ca_key = KeyPair::generate().map_err(pki_err("the CA key"))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("sessionizer-local-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key_pem = ca_key.serialize_pem();
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(pki_err("the CA"))?;

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            apiserver: files(dir, "apiserver"),
            admin: files(dir, "admin"),
            controller_manager: files(dir, "controller-manager"),
            service_account_key: dir.join("sa.key"),
            service_account_pub: dir.join("sa.pub"),
        };
        write(&pki.ca_cert, &ca.pem())?;
        write(&pki.ca_key, &ca_key_pem)?;

        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])
        .map_err(pki_err("the API server certificate"))?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        serving
            .subject_alt_names
            .push(SanType::IpAddress([10, 0, 0, 1].into()));
        serving.distinguished_name = name("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        issue(&ca, serving, &pki.apiserver, "the API server certificate")?;

        let admin = client_params("admin", Some("system:masters"));
        issue(&ca, admin, &pki.admin, "the admin certificate")?;
        let kcm = client_params("system:kube-controller-manager", None);
        issue(
            &ca,
            kcm,
            &pki.controller_manager,
            "the controller manager certificate",
        )?;

        let sa = KeyPair::generate().map_err(pki_err("the service-account key"))?;
        write(&pki.service_account_key, &sa.serialize_pem())?;
        write(&pki.service_account_pub, &sa.public_key_pem())?;
        Ok(pki)
    }
}

fn files(dir: &Path, stem: &str) -> CertFiles {
    CertFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    }
}

fn client_params(common_name: &str, organization: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, organization);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

fn issue(
    ca: &CertifiedIssuer<'_, KeyPair>,
    params: CertificateParams,
    out: &CertFiles,
    what: &'static str,
) -> Result<()> {
    let key = KeyPair::generate().map_err(pki_err(what))?;
    let cert = params.signed_by(&key, ca).map_err(pki_err(what))?;
    write(&out.cert, &cert.pem())?;
    write(&out.key, &key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_every_file_as_pem() {
        let dir = std::env::temp_dir().join(format!("pki-test-{}", std::process::id()));
        let pki = Pki::generate(&dir).unwrap();
        for path in [
            &pki.ca_cert,
            &pki.apiserver.cert,
            &pki.admin.cert,
            &pki.controller_manager.cert,
        ] {
            let pem = std::fs::read_to_string(path).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{path:?}");
        }
        let key = std::fs::read_to_string(&pki.service_account_key).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let public = std::fs::read_to_string(&pki.service_account_pub).unwrap();
        assert!(public.contains("PUBLIC KEY"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
