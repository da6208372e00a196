//! A blocking client of the public API socket, used by the CLI.

use std::path::{Path, PathBuf};

use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::connection::{ApiProtocol, HandshakeError};
use caxton_ipc::frame::FrameError;
use caxton_ipc::handshake::Role;
use interprocess::local_socket::{GenericFilePath, Stream, ToFsName, traits::Stream as _};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no Caxton daemon is listening on {path} ({cause}).\nStart one with `caxton serve`, or point --socket / CAXTON_SOCKET at the socket of a running one"
    )]
    NoDaemon {
        path: PathBuf,
        /// Shown in the message, not as a `source`, so it is not printed twice.
        cause: std::io::Error,
    },
    #[error(
        "permission denied on {path}: ask the operator to add you to the socket's group or to [api] allowed_uids"
    )]
    PermissionDenied { path: PathBuf },
    #[error("cannot connect to {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon refused the connection: {0}")]
    Rejected(String),
    #[error("lost the connection to the daemon: {0}")]
    Frame(#[from] FrameError),
}

pub struct Client {
    conn: caxton_ipc::connection::Client<ApiProtocol, Stream>,
}

impl Client {
    /// Connects to the API socket and shakes hands.
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| ClientError::Connect {
                path: path.into(),
                source,
            })?;
        let stream = Stream::connect(name).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NoDaemon {
                    path: path.into(),
                    cause: source,
                }
            }
            std::io::ErrorKind::PermissionDenied => {
                ClientError::PermissionDenied { path: path.into() }
            }
            _ => ClientError::Connect {
                path: path.into(),
                source,
            },
        })?;
        match caxton_ipc::connection::Client::<ApiProtocol, _>::connect(stream, Role::Cli) {
            Ok(conn) => Ok(Client { conn }),
            Err(HandshakeError::Rejected { reason, .. } | HandshakeError::Refused(reason)) => {
                Err(ClientError::Rejected(reason))
            }
            // An early error (bad frames, say) arrives as a response instead of a HelloReply.
            Err(HandshakeError::Frame(FrameError::Decode(_))) => Err(ClientError::Rejected(
                "the daemon answered with an error before the handshake".into(),
            )),
            Err(HandshakeError::Frame(e)) => Err(e.into()),
            Err(e @ HandshakeError::Timeout(_)) => Err(ClientError::Rejected(e.to_string())),
        }
    }

    pub fn send(&mut self, req: &ApiRequest) -> Result<(), ClientError> {
        Ok(self.conn.send(req)?)
    }

    pub fn recv(&mut self) -> Result<ApiResponse, ClientError> {
        Ok(self.conn.recv()?)
    }

    /// Sends a request that has exactly one response.
    pub fn call(&mut self, req: &ApiRequest) -> Result<ApiResponse, ClientError> {
        self.send(req)?;
        self.recv()
    }
}
