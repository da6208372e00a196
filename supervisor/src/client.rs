//! A blocking client of the public API socket, used by the CLI.

use std::path::{Path, PathBuf};

use caxton_ipc::api::{ApiRequest, ApiResponse};
use caxton_ipc::frame::{self, FrameError, MAX_FRAME_LEN};
use caxton_ipc::handshake::{Hello, HelloReply, Role};
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
    stream: Stream,
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
        let mut stream = Stream::connect(name).map_err(|source| match source.kind() {
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
        frame::write_sync(&mut stream, &Hello::new(Role::Cli))?;
        // An early error (busy, permission) arrives as a response instead of a HelloReply.
        match frame::read_sync::<HelloReply>(&mut stream, MAX_FRAME_LEN) {
            Ok(HelloReply::Welcome(_)) => Ok(Client { stream }),
            Ok(HelloReply::Rejected { reason }) => Err(ClientError::Rejected(reason)),
            Err(FrameError::Decode(_)) => Err(ClientError::Rejected(
                "the daemon answered with an error before the handshake".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub fn send(&mut self, req: &ApiRequest) -> Result<(), ClientError> {
        Ok(frame::write_sync(&mut self.stream, req)?)
    }

    pub fn recv(&mut self) -> Result<ApiResponse, ClientError> {
        Ok(frame::read_sync(&mut self.stream, MAX_FRAME_LEN)?)
    }

    /// Sends a request that has exactly one response.
    pub fn call(&mut self, req: &ApiRequest) -> Result<ApiResponse, ClientError> {
        self.send(req)?;
        self.recv()
    }
}
