//! TLS with rustls: the front ends' server config (reloaded on SIGHUP) and the
//! verified client configs mailshift uses towards backends.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::TlsConfig;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file held no usable certificate or key.
    #[error("{path}: {what}")]
    Content {
        /// The file.
        path: String,
        /// What is missing or wrong.
        what: String,
    },
    /// rustls refused the material.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn open(path: &Path) -> Result<BufReader<File>, Error> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut open(path)?).collect();
    let certs = certs.map_err(|e| Error::Content {
        path: path.display().to_string(),
        what: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(Error::Content {
            path: path.display().to_string(),
            what: "no PEM certificate found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    rustls_pemfile::private_key(&mut open(path)?)
        .map_err(|e| Error::Content {
            path: path.display().to_string(),
            what: e.to_string(),
        })?
        .ok_or_else(|| Error::Content {
            path: path.display().to_string(),
            what: "no PEM private key found".into(),
        })
}

fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = load_certs(&cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// The front ends' certificate, swappable while running.
pub struct ServerTls {
    cfg: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl ServerTls {
    /// Loads the certificate and key.
    pub fn load(cfg: &TlsConfig) -> Result<ServerTls, Error> {
        Ok(ServerTls {
            cfg: cfg.clone(),
            current: RwLock::new(server_config(cfg)?),
        })
    }

    /// Re-reads the files; on failure the old certificate stays in use.
    pub fn reload(&self) -> Result<(), Error> {
        let fresh = server_config(&self.cfg)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }
}

/// A verifying client connector: the CA file's roots, or the bundled web roots.
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots.add(cert)?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
