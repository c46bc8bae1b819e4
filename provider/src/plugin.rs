//! go-plugin, server side: check that Terraform started us, listen on a Unix
//! socket, print the one handshake line on stdout, serve gRPC (the provider,
//! go-plugin's controller and the health service) until Terraform calls
//! `GRPCController.Shutdown`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::config::{Config, MAGIC_COOKIE};
use crate::server::Provider;
use crate::tfplugin::plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::tfplugin::plugin::Empty;
use crate::tfplugin::tfplugin6::provider_server::ProviderServer;
use crate::tls::ServerTls;

/// go-plugin's core protocol version.
const CORE_PROTOCOL_VERSION: u32 = 1;
/// The Terraform plugin protocol this provider speaks.
const PLUGIN_PROTOCOL_VERSION: u32 = 6;

pub async fn serve(config: Config) -> anyhow::Result<()> {
    check_started_by_terraform(&config)?;
    let socket_dir = config
        .unix_socket_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let socket = SocketFile::create(&socket_dir)?;
    let listener = UnixListener::bind(&socket.path)
        .with_context(|| format!("listening on {}", socket.path.display()))?;
    let tls = match config.tls_client_cert() {
        Some(pem) => Some(ServerTls::new(pem)?),
        None => None,
    };

    let shutdown = CancellationToken::new();
    ignore_interrupts();
    let provider = Provider::new(config.defaults(), shutdown.child_token());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = accept_loop(
        listener,
        tls.as_ref()
            .map(|t| TlsAcceptor::from(Arc::clone(&t.config))),
        shutdown.clone(),
    );
    let server = tonic::transport::Server::builder()
        .add_service(
            ProviderServer::new(provider)
                .max_decoding_message_size(usize::MAX >> 1)
                .max_encoding_message_size(usize::MAX >> 1),
        )
        .add_service(GrpcControllerServer::new(Controller {
            shutdown: shutdown.clone(),
        }))
        .add_service(health_service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());

    print_handshake(&socket.path, tls.as_ref())?;
    tracing::info!(socket = %socket.path.display(), tls = tls.is_some(), "serving");
    server.await.context("serving gRPC")?;
    tracing::debug!("shut down");
    Ok(())
}

fn check_started_by_terraform(config: &Config) -> anyhow::Result<()> {
    if config.magic_cookie.as_deref() != Some(MAGIC_COOKIE) {
        bail!(
            "this binary is a Terraform plugin. It is not meant to be run directly.\n\
             Use it from Terraform: declare `source = \"registry.pgplane.io/pgplane/pgplane\"` \
             in required_providers (see the provider's docs)."
        );
    }
    if let Some(versions) = &config.protocol_versions {
        let speaks_6 = versions
            .split(',')
            .any(|v| v.trim() == PLUGIN_PROTOCOL_VERSION.to_string());
        if !speaks_6 {
            bail!(
                "Terraform offers plugin protocol versions {versions}, this provider speaks \
                 only version {PLUGIN_PROTOCOL_VERSION} (Terraform 1.0 or later)"
            );
        }
    }
    Ok(())
}

/// `CORE|APP|unix|PATH|grpc|CERT`, the only thing ever written to stdout.
fn print_handshake(socket: &Path, tls: Option<&ServerTls>) -> anyhow::Result<()> {
    let cert = tls.map(ServerTls::cert_for_handshake).unwrap_or_default();
    let line = format!(
        "{CORE_PROTOCOL_VERSION}|{PLUGIN_PROTOCOL_VERSION}|unix|{}|grpc|{cert}\n",
        socket.display()
    );
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Terraform forwards Ctrl-C to its plugins' process group and then asks
/// them to stop through `StopProvider`; the provider must outlive the signal
/// to answer. Installing a handler replaces the default (terminate).
fn ignore_interrupts() {
    if let Ok(mut sigint) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    {
        tokio::spawn(async move {
            while sigint.recv().await.is_some() {
                tracing::debug!("SIGINT ignored; Terraform stops providers through StopProvider");
            }
        });
    }
}

/// The socket path, removed when the provider exits.
struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    fn create(dir: &Path) -> anyhow::Result<SocketFile> {
        let path = dir.join(format!(
            "plugin-pgplane-{}.sock",
            uuid::Uuid::new_v4().simple()
        ));
        Ok(SocketFile { path })
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepted connections, TLS-wrapped when AutoMTLS is on. Handshakes run
/// in their own tasks so a slow client does not hold up the next one.
fn accept_loop(
    listener: UnixListener,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            let tx = tx.clone();
            match &tls {
                None => {
                    let _ = tx.send(Ok(Conn::Plain(stream))).await;
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor.accept(stream).await {
                            Ok(s) => {
                                let _ = tx.send(Ok(Conn::Tls(Box::new(s)))).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "TLS handshake failed"),
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// One client connection.
pub enum Conn {
    Plain(UnixStream),
    Tls(Box<TlsStream<UnixStream>>),
}

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// go-plugin's `GRPCController`: `Shutdown` ends the process promptly (without
/// it Terraform waits two seconds and kills every provider process).
struct Controller {
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(
        &self,
        _request: tonic::Request<Empty>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        tracing::debug!("shutdown requested");
        let shutdown = self.shutdown.clone();
        // Answer first, then stop serving.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            shutdown.cancel();
        });
        Ok(tonic::Response::new(Empty {}))
    }
}
