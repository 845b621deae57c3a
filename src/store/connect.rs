//! One TLS connector for every store leg: TCP, then TLS now (implicit) or
//! later (after the protocol's STARTTLS), verified against the store's name.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Error;
use crate::config::{BackendConfig, Endpoint, Security};
use crate::stream::Stream;

/// How to reach and verify one store.
pub struct Connector {
    tls: Option<TlsConnector>,
    /// Name verified in the store's certificate.
    server_name: Option<String>,
}

impl Connector {
    /// From the backend's `ca_file` and `tls_server_name`; TLS is set up only
    /// when some endpoint of the store needs it.
    pub fn new(cfg: &BackendConfig) -> Result<Connector, crate::tls::Error> {
        let needs_tls = std::iter::once(&cfg.imap)
            .chain(cfg.delivery.as_ref())
            .chain(cfg.submission.as_ref())
            .chain(cfg.pop3.as_ref())
            .chain(cfg.sieve.as_ref())
            .any(|e| e.security != Security::Plain);
        let tls = if needs_tls {
            Some(crate::tls::connector(cfg.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Connector {
            tls,
            server_name: cfg.tls_server_name.clone(),
        })
    }

    /// TCP to the endpoint, with TLS at once for implicit-TLS schemes.
    pub async fn connect(&self, ep: &Endpoint) -> Result<Stream, Error> {
        let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|source| Error::Io {
                stage: "connect",
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match ep.security {
            Security::Tls => self.handshake(tcp, ep).await,
            _ => Ok(Stream::Plain(tcp)),
        }
    }

    /// Upgrades a plain connection after the protocol's STARTTLS.
    pub async fn starttls(&self, s: Stream, ep: &Endpoint) -> Result<Stream, Error> {
        let Stream::Plain(tcp) = s else {
            return Err(Error::Protocol {
                stage: "starttls",
                what: "already TLS".into(),
            });
        };
        self.handshake(tcp, ep).await
    }

    async fn handshake(&self, tcp: TcpStream, ep: &Endpoint) -> Result<Stream, Error> {
        let stage = "tls";
        let connector = self
            .tls
            .as_ref()
            .ok_or_else(|| Error::Config("no TLS connector for this store".into()))?;
        let host = self.server_name.clone().unwrap_or_else(|| ep.host.clone());
        let name = ServerName::try_from(host.clone())
            .map_err(|_| Error::Config(format!("{host:?} is not a valid TLS server name")))?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|source| Error::Io { stage, source })?;
        Ok(Stream::StoreTls(Box::new(tls)))
    }
}
