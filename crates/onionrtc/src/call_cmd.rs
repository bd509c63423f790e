//! `onionrtc call URL`: a native caller for the signaling protocol of
//! docs/signaling.md, with our own media endpoint (crate `media`). See
//! docs/call.md.

use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use connector::dial::{BoxIo, Dialer, Route};
use connector::{Endpoint as Upstream, RelayTrust, Via};
use futures_util::{SinkExt as _, StreamExt as _};
use media::codec::{Decoder, Encoder};
use media::ice_servers::{parse_turn_url, TurnUrl};
use media::{Endpoint, EndpointConfig, EndpointEvent, JitterBuffer, RelayProtocol};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

/// Flags of `onionrtc call`. The names are a contract with tests and
/// docs/call.md.
#[derive(Args, Debug)]
pub struct CallFlags {
    /// The room's page, e.g. https://call.example.org/?room=NAME (with
    /// --echo: the site). For an https:// or .onion site, its
    /// /.well-known/onionrtc.json (fetched along --via) pins the relay's
    /// TLS key and, through Tor, names its onion relay.
    #[arg(value_name = "URL", required_unless_present = "list_devices")]
    pub url: Option<String>,

    /// Test the path instead of calling someone: the server's echo test
    /// (`/api/echo`) sends our audio back; prints RTT, jitter, loss, MOS
    /// and a verdict (good, usable, poor).
    #[arg(long)]
    pub echo: bool,

    /// Send a sine tone of HZ hertz.
    #[arg(long, value_name = "HZ", conflicts_with = "send")]
    pub tone: Option<f64>,

    /// Send this WAV file (any PCM WAV; mixed to mono, resampled to
    /// 48 kHz, looped until the call ends).
    #[arg(long, value_name = "FILE")]
    pub send: Option<PathBuf>,

    /// Record what the peer sends to FILE (48 kHz mono 16-bit WAV), from
    /// the moment the call connects. The speaker then stays off unless
    /// --speaker is given too.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Send the microphone: the default input device, or --mic=NAME (a
    /// name from --list-devices). The default without --tone, --send or
    /// --no-mic (with --echo: only when asked).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true,
          default_missing_value = "", conflicts_with_all = ["tone", "send", "no_mic"])]
    pub mic: Option<String>,

    /// Send silence instead of the microphone (receive only).
    #[arg(long, conflicts_with_all = ["tone", "send"])]
    pub no_mic: bool,

    /// Play what the peer sends: on the default output device, or
    /// --speaker=NAME. The default without --record or --no-speaker (with
    /// --echo: only when asked).
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true,
          default_missing_value = "", conflicts_with = "no_speaker")]
    pub speaker: Option<String>,

    /// Do not play what the peer sends.
    #[arg(long)]
    pub no_speaker: bool,

    /// List the audio input and output devices (the names --mic= and
    /// --speaker= take) and exit.
    #[arg(long)]
    pub list_devices: bool,

    /// Hang up this many seconds after the call connected.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Give up if the call has not connected after this many seconds
    /// (waiting for the other member included).
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,

    /// Print a JSON summary as the last line on stdout when the call ends.
    #[arg(long)]
    pub json: bool,

    /// Which of the relay URLs in `iceServers` to use: udp, tcp or tls
    /// (default: udp when offered; a --via other than direct needs tcp or
    /// tls).
    #[arg(long, value_name = "PROTO")]
    pub turn_transport: Option<String>,

    /// How the WebSocket and TURN leave this machine: direct,
    /// socks5://HOST:PORT (host names resolved by the proxy) or tor
    /// (embedded Tor, as `onionrtc connect --via tor`; with --tor-binary a
    /// launched tor's SOCKS port), for both.
    #[arg(long, value_name = "MODE", default_value = "direct")]
    pub via: String,

    /// How Tor runs with --via tor.
    #[command(flatten)]
    pub tor: crate::connect_cmd::TorFlags,

    /// Trust only the CA certificates in FILE (PEM) for the relay's TLS
    /// (and the site's, besides the built-in roots).
    #[arg(long, value_name = "FILE", conflicts_with = "relay_spki")]
    pub relay_ca: Option<PathBuf>,

    /// Accept the relay's certificate only if the SHA-256 of its
    /// SubjectPublicKeyInfo is BASE64.
    #[arg(long, value_name = "BASE64-SHA256")]
    pub relay_spki: Option<String>,

    /// CA certificates (PEM) to trust for the site's HTTPS besides the
    /// built-in roots (a private CA).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// Move the relay allocation to a new connection (through Tor: a new
    /// circuit) when nothing came from the relay for this many
    /// milliseconds during the call, or when the connection breaks (TCP
    /// and TLS relays; TURN mobility, RFC 8016). 0: never move.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub hop_after_stall: u64,

    /// Move to a new connection once, this many seconds after the call
    /// connected, whatever the path's health (tests and measurements).
    #[arg(long, value_name = "SECS")]
    pub hop_at: Option<f64>,

    /// Opus bit rate (bit/s).
    #[arg(long, value_name = "BPS", default_value_t = 32_000)]
    pub bitrate: i32,
}

/// The site and room from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    site: Upstream,
    room: Option<String>,
}

fn parse_url(url: &str) -> anyhow::Result<Target> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.split_once("://").map_or(base, |(scheme, rest)| {
        // Keep the scheme, drop any path: the page is at the site's root.
        let host_end = rest.find('/').unwrap_or(rest.len());
        &base[..scheme.len() + 3 + host_end]
    });
    let site =
        Upstream::parse_web(base).context("the URL must be http(s)://HOST[:PORT]/?room=NAME")?;
    let room = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("room="))
        .filter(|r| !r.is_empty())
        .map(str::to_owned);
    Ok(Target { site, room })
}

/// The relay to use, with its credentials.
#[derive(Debug)]
struct Relay {
    url: TurnUrl,
    username: String,
    credential: String,
}

fn pick_relay(ice_servers: &Value, want: Option<RelayProtocol>) -> anyhow::Result<Relay> {
    let mut found: Vec<Relay> = Vec::new();
    for server in ice_servers.as_array().into_iter().flatten() {
        let username = server["username"].as_str().unwrap_or_default();
        let credential = server["credential"].as_str().unwrap_or_default();
        let urls: Vec<&str> = match &server["urls"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for u in urls {
            if let Some(url) = parse_turn_url(u) {
                found.push(Relay {
                    url,
                    username: username.to_owned(),
                    credential: credential.to_owned(),
                });
            }
        }
    }
    let order = match want {
        Some(p) => vec![p],
        None => vec![RelayProtocol::Udp, RelayProtocol::Tcp, RelayProtocol::Tls],
    };
    for p in order {
        if let Some(i) = found.iter().position(|r| r.url.protocol == p) {
            return Ok(found.swap_remove(i));
        }
    }
    match want {
        Some(p) => bail!("the server offers no TURN URL over {}", p.as_str()),
        None => bail!("the server offers no TURN URL"),
    }
}

/// The TURN connection: a UDP socket or a stream.
enum TurnIo {
    Udp(tokio::net::UdpSocket, SocketAddr),
    Stream(tokio::io::ReadHalf<BoxIo>, tokio::io::WriteHalf<BoxIo>),
}

/// Audio to send.
enum Source {
    Silence,
    Tone(media::tone::Tone),
    Samples(Vec<i16>, usize),
    Mic(crate::audio_dev::Mic),
}

impl Source {
    fn frame(&mut self) -> [i16; media::FRAME_SAMPLES] {
        match self {
            Source::Silence => [0; media::FRAME_SAMPLES],
            Source::Tone(t) => t.frame(),
            Source::Mic(m) => m.frame(),
            Source::Samples(s, pos) => {
                let mut out = [0i16; media::FRAME_SAMPLES];
                if s.is_empty() {
                    return out;
                }
                for o in out.iter_mut() {
                    *o = s[*pos];
                    *pos = (*pos + 1) % s.len();
                }
                out
            }
        }
    }
}

fn read_wav(path: &Path) -> anyhow::Result<Vec<i16>> {
    let mut r = hound::WavReader::open(path)
        .with_context(|| format!("cannot read {} as a WAV file", path.display()))?;
    let spec = r.spec();
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => r
            .samples::<f32>()
            .map(|s| s.map(|v| f64::from(v) * 32767.0))
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let shift = i32::from(spec.bits_per_sample).saturating_sub(16);
            r.samples::<i32>()
                .map(|s| {
                    s.map(|v| {
                        if shift >= 0 {
                            f64::from(v >> shift)
                        } else {
                            f64::from(v << -shift)
                        }
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mono: Vec<i16> = raw
        .chunks(channels)
        .map(|c| (c.iter().sum::<f64>() / c.len() as f64).clamp(-32768.0, 32767.0) as i16)
        .collect();
    Ok(media::tone::resample_to_48k(&mono, spec.sample_rate))
}

/// Which audio devices the flags ask for: `Some(name)` to open one (`""`
/// for the default device). The microphone unless something else is sent
/// or --no-mic; the speaker unless --record (without --speaker) or
/// --no-speaker; with --echo (a path test) only the devices asked for.
fn devices(flags: &CallFlags) -> (Option<&str>, Option<&str>) {
    let mic = match &flags.mic {
        Some(name) => Some(name.as_str()),
        None if flags.tone.is_none() && flags.send.is_none() && !flags.no_mic && !flags.echo => {
            Some("")
        }
        None => None,
    };
    let speaker = match &flags.speaker {
        Some(name) => Some(name.as_str()),
        None if flags.record.is_none() && !flags.no_speaker && !flags.echo => Some(""),
        None => None,
    };
    (mic, speaker)
}

/// The name of a device for messages.
fn device_label(name: &str) -> String {
    if name.is_empty() {
        "the default device".to_owned()
    } else {
        format!("device {name:?}")
    }
}

/// Runs the call; returns whether it connected (the exit status).
pub fn run(flags: CallFlags) -> anyhow::Result<bool> {
    let _ = crate::relay_cmd::init_tracing();
    if flags.list_devices {
        print!("{}", crate::audio_dev::list()?);
        return Ok(true);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let json_out = flags.json;
    let result = runtime.block_on(call(flags));
    if let (true, Err(e)) = (json_out, &result) {
        // The contract holds for calls that never got going too.
        let v = json!({
            "state": "failed", "relayProtocol": null, "packetsReceived": null,
            "packetsLost": null, "rtt": null, "jitter": null, "mos": null,
            "verdict": "poor", "error": crate::message(e),
        });
        println!("{v}");
    }
    result
}

struct Summary {
    state: &'static str,
    error: Option<String>,
}

async fn call(flags: CallFlags) -> anyhow::Result<bool> {
    let target = parse_url(flags.url.as_deref().unwrap_or_default())?;
    let mut via = Via::parse(&flags.via)?;
    flags.tor.apply(&mut via)?;
    let want = match flags.turn_transport.as_deref() {
        None => None,
        Some("udp") => Some(RelayProtocol::Udp),
        Some("tcp") => Some(RelayProtocol::Tcp),
        Some("tls") => Some(RelayProtocol::Tls),
        Some(other) => bail!("--turn-transport {other}: expected udp, tcp or tls"),
    };
    if via != Via::Direct && want == Some(RelayProtocol::Udp) {
        bail!(
            "--via {} carries streams only: use --turn-transport tcp or tls",
            flags.via
        );
    }
    if let Via::Tor(options) = &via {
        eprintln!("{}", crate::connect_cmd::starting_tor(options));
    }
    // With --via tor, `_tor` is the tor launched for this call: killed by
    // PID when the call ends (dropped).
    let (route, _tor) = connector::open_route(&via)
        .await
        .context("--via tor: cannot start tor")?;
    let mut trust = match (&flags.relay_ca, &flags.relay_spki) {
        (Some(ca), _) => RelayTrust::CaFile(ca.clone()),
        (None, Some(pin)) => RelayTrust::parse_spki(pin)?,
        (None, None) => RelayTrust::WebPki,
    };
    let trust_given = flags.relay_ca.is_some() || flags.relay_spki.is_some();
    // The audio devices open before anything goes on the network: no
    // device is an error the user can act on, not a silent call.
    let (mic, speaker) = devices(&flags);
    let mut source = match (&flags.tone, &flags.send, mic) {
        (Some(hz), _, _) => Source::Tone(media::tone::Tone::new(*hz)),
        (None, Some(file), _) => Source::Samples(read_wav(file)?, 0),
        (None, None, Some(name)) => {
            Source::Mic(crate::audio_dev::Mic::open(Some(name)).with_context(|| {
                format!(
                    "no microphone ({}); send --tone HZ or --send FILE.wav instead, \
                     or --no-mic to send silence",
                    device_label(name)
                )
            })?)
        }
        (None, None, None) => Source::Silence,
    };
    let mut speaker = match speaker {
        Some(name) => Some(
            crate::audio_dev::Speaker::open(Some(name)).with_context(|| {
                format!(
                    "no speaker ({}); use --record FILE.wav or --no-speaker",
                    device_label(name)
                )
            })?,
        ),
        None => None,
    };
    let mut recorder = match &flags.record {
        Some(path) => Some(
            hound::WavWriter::create(
                path,
                hound::WavSpec {
                    channels: 1,
                    sample_rate: media::SAMPLE_RATE,
                    bits_per_sample: 16,
                    sample_format: hound::SampleFormat::Int,
                },
            )
            .with_context(|| format!("cannot create {}", path.display()))?,
        ),
        None => None,
    };
    let dialer = Dialer::new(route.clone(), Duration::from_secs(30));

    // The signaling WebSocket, along the route.
    let web_tls = match (target.site.tls, &flags.ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(connector::tls::site_config(Some(ca))?),
        (true, None) => Some(connector::tls::web_config(&trust)?),
    };
    // The site's document (https:// or onion only: over plain http:// to
    // another host it could be rewritten on the way, so none is read).
    let doc = if target.site.tls || target.site.is_onion() {
        match connector::wellknown::fetch(&dialer, &target.site, web_tls.as_ref()).await {
            Ok(d) => Some(d),
            Err(connector::wellknown::WellKnownError::Http { reason, .. })
                if reason.starts_with("404") =>
            {
                None
            }
            Err(e) => return Err(anyhow::Error::new(e).context("the site's document")),
        }
    } else {
        None
    };
    let tor = matches!(via, Via::Tor(_));
    if let Some(d) = &doc {
        if !trust_given && !d.pins.is_empty() {
            trust = RelayTrust::SpkiPins(d.pins.clone());
        }
    }
    let start = Instant::now();
    let setup_deadline = start + Duration::from_secs_f64(flags.timeout.max(1.0));
    let tty = std::io::stderr().is_terminal() && !flags.json;
    let (mut ws, joined) = if flags.echo {
        let (status, body) =
            http(&dialer, &target.site, web_tls.as_ref(), "/api/echo", None).await?;
        if status != 200 {
            bail!("GET /api/echo answered {status}: {}", body.trim());
        }
        let v: Value = serde_json::from_str(&body).context("GET /api/echo: not JSON")?;
        (None, v)
    } else {
        let room = target
            .room
            .clone()
            .context("the URL has no ?room=NAME (or use --echo)")?;
        let (ws, joined) = join(
            &dialer,
            &target.site,
            web_tls.as_ref(),
            &room,
            setup_deadline,
        )
        .await?;
        (Some(ws), joined)
    };
    let mut initiator = flags.echo || joined["initiator"].as_bool().unwrap_or(false);
    let servers = &joined["iceServers"];
    let relay = if route != Route::Direct && want.is_none() {
        // Through a proxy: TLS when offered (a Tor exit sees nothing), else TCP.
        pick_relay(servers, Some(RelayProtocol::Tls))
            .or_else(|_| pick_relay(servers, Some(RelayProtocol::Tcp)))?
    } else {
        pick_relay(servers, want)?
    };
    // Through Tor, the site's onion relay (same relay, same credentials)
    // instead of its address: no exit.
    let mut relay = relay;
    if let Some(onion) = doc
        .as_ref()
        .and_then(|d| d.relay(tor))
        .filter(|e| e.is_onion())
    {
        if relay.url.protocol != RelayProtocol::Udp {
            relay.url.protocol = if onion.tls {
                RelayProtocol::Tls
            } else {
                RelayProtocol::Tcp
            };
            relay.url.host = onion.host;
            relay.url.port = onion.port;
        }
    }

    // The TURN connection.
    let (mut io, server, local) = match relay.url.protocol {
        RelayProtocol::Udp => {
            let server: SocketAddr = match relay.url.host.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, relay.url.port),
                Err(_) => tokio::net::lookup_host((relay.url.host.as_str(), relay.url.port))
                    .await?
                    .next()
                    .context("the relay's name does not resolve")?,
            };
            let bind: SocketAddr = if server.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                "[::]:0".parse()?
            };
            let sock = tokio::net::UdpSocket::bind(bind).await?;
            sock.connect(server).await?;
            let local = sock.local_addr()?;
            (TurnIo::Udp(sock, server), server, local)
        }
        RelayProtocol::Tcp | RelayProtocol::Tls => {
            let tls = relay.url.protocol == RelayProtocol::Tls;
            let ep = Upstream {
                tls,
                host: relay.url.host.clone(),
                port: relay.url.port,
            };
            let s = dial_relay(&dialer, &ep, &trust).await?;
            // The TURN client needs an address for the server; over a
            // stream it is only a label (the name may be resolved by the proxy).
            let server = relay.url.host.parse::<IpAddr>().map_or(
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), relay.url.port),
                |ip| SocketAddr::new(ip, relay.url.port),
            );
            let (r, w) = tokio::io::split(s);
            (
                TurnIo::Stream(r, w),
                server,
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9),
            )
        }
    };
    let transport = if relay.url.protocol == RelayProtocol::Udp {
        turn::Transport::Udp
    } else {
        turn::Transport::Tcp
    };
    let mut turn_config =
        turn::client::ClientConfig::new(server, transport, &relay.username, &relay.credential);
    // RFC 8016: a stream to the relay (through Tor: a circuit) can be
    // replaced mid-call without dropping the allocation.
    turn_config.mobility = transport.is_stream();
    let relay_ep = Upstream {
        tls: relay.url.protocol == RelayProtocol::Tls,
        host: relay.url.host.clone(),
        port: relay.url.port,
    };
    let mut hops = Hops::new(&flags);
    let mut ep_config = EndpointConfig::new(turn_config, local);
    ep_config.relay_protocol = relay.url.protocol;
    let mut ep = Endpoint::new(ep_config, Instant::now())?;
    ep.start(Instant::now())?;

    let mut encoder = Encoder::new(flags.bitrate)?;
    let mut decoder = Decoder::new()?;
    let mut jb = JitterBuffer::new();
    let mut pending_offer: Option<String> = None;
    let mut offered = false;
    let mut allocated = false;
    let mut connected_at: Option<Instant> = None;
    let mut rtp_time: u32 = rand::random();
    let mut next_tick = tokio::time::Instant::now();
    let mut next_stats = Instant::now() + Duration::from_secs(1);
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0i16; media::FRAME_SAMPLES];
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut last_bytes = (0u64, 0u64, Instant::now());
    let mut summary = Summary {
        state: "connecting",
        error: None,
    };

    // An error inside the call ends it like any failure: the summary is
    // still printed.
    macro_rules! end_on_err {
        ($label:lifetime, $e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => {
                    summary.state = if connected_at.is_some() {
                        "disconnected"
                    } else {
                        "failed"
                    };
                    summary.error = Some(anyhow::Error::from(e).to_string());
                    break $label;
                }
            }
        };
    }
    'call: loop {
        // Everything the endpoint wants to send or say.
        if let Err(e) = flush(&mut ep, &mut io).await {
            if hops.enabled() && ep.can_move_relay() && !hops.is_broken() {
                hops.broken();
            } else if !hops.is_broken() {
                end_on_err!('call, Err::<(), _>(e));
            }
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                EndpointEvent::Allocated { .. } => {
                    allocated = true;
                }
                EndpointEvent::AllocationFailed { code, reason } => {
                    summary.state = "failed";
                    summary.error =
                        Some(format!("the relay refused the allocation: {code} {reason}"));
                    break 'call;
                }
                EndpointEvent::Connected => {
                    connected_at = Some(Instant::now());
                    summary.state = "connected";
                    if tty {
                        eprintln!("connected via relay over {}", ep.relay_protocol().as_str());
                    }
                }
                EndpointEvent::Disconnected => {
                    if tty {
                        eprintln!("\ndisconnected; waiting for ICE to recover");
                    }
                }
                EndpointEvent::Failed(why) => {
                    summary.state = if connected_at.is_some() {
                        "disconnected"
                    } else {
                        "failed"
                    };
                    summary.error = Some(why);
                    break 'call;
                }
                EndpointEvent::Audio(p) => jb.push(p.seq, p.rtp_time, p.arrival, &p.payload),
            }
        }
        match ep.take_move_result() {
            Some(Ok(())) => hops.moved(tty),
            Some(Err(code)) => {
                summary.state = "disconnected";
                summary.error = Some(format!("the relay refused to move the allocation ({code})"));
                break 'call;
            }
            None => {}
        }
        // A stalled or broken relay connection: a new one (a new circuit).
        if let Some(why) = hops.due(Instant::now(), connected_at, transport, ep.can_move_relay()) {
            if why == HopReason::Probe {
                ep.probe_relay(Instant::now());
                continue;
            }
            match hop(
                &mut ep, &dialer, &relay_ep, &trust, server, &mut hops, why, tty,
            )
            .await
            {
                Ok(new_io) => io = new_io,
                Err(e) => {
                    summary.state = if connected_at.is_some() {
                        "disconnected"
                    } else {
                        "failed"
                    };
                    summary.error = Some(format!("cannot move to a new relay connection: {e:#}"));
                    break 'call;
                }
            }
            continue;
        }
        if allocated && initiator && !offered {
            offered = true;
            let offer = end_on_err!('call, ep.create_offer(Instant::now()));
            if let Some(ws) = ws.as_mut() {
                end_on_err!('call,
                    ws.send(Message::text(
                        json!({"type": "offer", "sdp": offer}).to_string(),
                    ))
                    .await
                );
            } else {
                // The echo test: SDP over HTTP, 201 with the answer.
                let (status, answer) = end_on_err!(
                    'call,
                    http(
                        &dialer,
                        &target.site,
                        web_tls.as_ref(),
                        "/api/echo",
                        Some(&offer),
                    )
                    .await
                );
                if status != 201 {
                    summary.state = "failed";
                    summary.error = Some(format!(
                        "POST /api/echo answered {status}: {}",
                        answer.trim()
                    ));
                    break 'call;
                }
                if let Err(e) = ep.accept_answer(Instant::now(), &answer) {
                    summary.state = "failed";
                    summary.error = Some(format!("cannot take the echo's answer: {e}"));
                    break 'call;
                }
            }
        }
        if allocated {
            if let Some(offer) = pending_offer.take() {
                match ep.accept_offer(Instant::now(), &offer) {
                    Ok(answer) => {
                        if let Some(ws) = ws.as_mut() {
                            end_on_err!('call,
                                ws.send(Message::text(
                                    json!({"type": "answer", "sdp": answer}).to_string(),
                                ))
                                .await
                            );
                        }
                    }
                    Err(e) => {
                        summary.state = "failed";
                        summary.error = Some(format!("cannot take the peer's offer: {e}"));
                        break 'call;
                    }
                }
                continue;
            }
        }
        if connected_at.is_none() && Instant::now() >= setup_deadline {
            summary.state = "failed";
            summary.error = Some("the call did not connect in time".into());
            break;
        }
        if let (Some(at), Some(d)) = (connected_at, flags.duration) {
            if at.elapsed() >= Duration::from_secs_f64(d) {
                break;
            }
        }
        let wake = ep.poll_timeout().map_or(next_tick, |t| {
            tokio::time::Instant::from_std(t).min(next_tick)
        });
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
            msg = next_message(&mut ws) => {
                let Some(Ok(msg)) = msg else {
                    summary.error = Some("the signaling connection closed".into());
                    if connected_at.is_none() { summary.state = "failed"; } else { summary.state = "disconnected"; }
                    break;
                };
                let Message::Text(text) = msg else { continue };
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let now = Instant::now();
                match v["type"].as_str() {
                    Some("offer") => pending_offer = v["sdp"].as_str().map(str::to_owned),
                    Some("answer") => {
                        if let Some(sdp) = v["sdp"].as_str() {
                            if let Err(e) = ep.accept_answer(now, sdp) {
                                summary.state = "failed";
                                summary.error = Some(format!("cannot take the peer's answer: {e}"));
                                break;
                            }
                        }
                    }
                    Some("candidate") => {
                        if let Some(c) = v["candidate"]["candidate"].as_str() {
                            let _ = ep.add_remote_candidate(now, c);
                        }
                    }
                    Some("peer-left") => break,
                    Some("peer-joined") => {
                        if offered || connected_at.is_some() {
                            // a new member: we do not renegotiate; hang up.
                            break;
                        }
                        initiator = false;
                    }
                    Some("error") => {
                        eprintln!("server: {} ({})", v["message"].as_str().unwrap_or(""), v["code"].as_str().unwrap_or(""));
                    }
                    _ => {}
                }
            }
            r = recv(&mut io, &mut buf) => {
                let now = Instant::now();
                if matches!(r, Ok(n) if n > 0) {
                    hops.heard(now);
                }
                match r {
                    Ok(n) if n > 0 => match &io {
                        TurnIo::Udp(_, server) => ep.handle_turn_datagram(now, *server, &buf[..n]),
                        TurnIo::Stream(..) => {
                            if let Err(e) = ep.handle_turn_stream(now, &buf[..n]) {
                                summary.state = if connected_at.is_some() { "disconnected" } else { "failed" };
                                summary.error = Some(format!("relay stream: {e}"));
                                break;
                            }
                        }
                    },
                    Ok(_) | Err(_) if matches!(io, TurnIo::Stream(..)) => {
                        if hops.enabled() && ep.can_move_relay() && !hops.is_broken() {
                            // A circuit that broke: move to a new one.
                            hops.broken();
                            continue;
                        }
                        summary.state = if connected_at.is_some() { "disconnected" } else { "failed" };
                        summary.error = Some("the relay closed the connection".into());
                        break;
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                ep.handle_timeout(now);
                if tokio::time::Instant::now() >= next_tick {
                    next_tick += Duration::from_millis(20);
                    // Catch up without a burst after a stall.
                    if next_tick < tokio::time::Instant::now() {
                        next_tick = tokio::time::Instant::now() + Duration::from_millis(20);
                    }
                    if connected_at.is_some() {
                        // The source starts with the call: frame 0 is sent
                        // at the tick the first recorded frame is written.
                        let frame = source.frame();
                        let pkt = end_on_err!('call, encoder.encode(&frame)).to_vec();
                        ep.send_audio(now, rtp_time, &pkt);
                        rtp_time = rtp_time.wrapping_add(media::FRAME_SAMPLES as u32);
                        jb.pop(now, &mut decoder, &mut out);
                        if let Some(s) = speaker.as_mut() {
                            s.play(&out);
                        }
                        if let Some(w) = recorder.as_mut() {
                            for s in &out {
                                end_on_err!('call, w.write_sample(*s));
                            }
                        }
                    }
                }
                if now >= next_stats {
                    next_stats = now + Duration::from_secs(1);
                    let s = snapshot(&ep, &jb);
                    let (sent, recv_b, at) = last_bytes;
                    let dt = now.duration_since(at).as_secs_f64().max(0.001);
                    let stats = json!({
                        "ts": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                        "state": if connected_at.is_some() { "connected" } else { "connecting" },
                        "rtt": s.rtt, "jitter": s.jitter,
                        "packetsLost": s.packets_lost, "packetsReceived": s.packets_received,
                        "jitterBufferDelay": s.jitter_buffer_delay,
                        "jitterBufferEmittedCount": s.jitter_buffer_emitted_count,
                        "bytesSent": s.bytes_sent, "bytesReceived": s.bytes_received,
                        "bitrateIn": 8.0 * (s.bytes_received.saturating_sub(recv_b)) as f64 / dt,
                        "bitrateOut": 8.0 * (s.bytes_sent.saturating_sub(sent)) as f64 / dt,
                        "localCandidateType": "relay", "remoteCandidateType": "relay",
                        "relayProtocol": ep.relay_protocol().as_str(),
                    });
                    last_bytes = (s.bytes_sent, s.bytes_received, now);
                    if let (Some(ws), Some(_)) = (ws.as_mut(), connected_at) {
                        let _ = ws.send(Message::text(json!({"type": "stats", "stats": stats}).to_string())).await;
                    }
                    if tty {
                        eprint!("\r{}   ", status_line(connected_at.is_some(), &s));
                    }
                }
            }
        }
    }
    if tty {
        eprintln!();
    }
    // Hang up: bye to the room, delete the allocation.
    if let Some(ws) = ws.as_mut() {
        let _ = ws
            .send(Message::text(json!({"type": "bye"}).to_string()))
            .await;
        let _ = ws.close(None).await;
    }
    ep.close(Instant::now());
    let _ = tokio::time::timeout(Duration::from_millis(500), flush(&mut ep, &mut io)).await;
    if let Some(w) = recorder {
        w.finalize()?;
    }
    let s = snapshot(&ep, &jb);
    let connected = ep.was_connected();
    if connected && summary.error.is_none() {
        summary.state = "connected";
    }
    if !connected {
        summary.state = "failed";
        if summary.error.is_none() {
            summary.error = Some("the call ended before it connected".into());
        }
    }
    if let Some(e) = &summary.error {
        eprintln!("call ended: {e}");
    }
    if flags.echo && !flags.json {
        println!("{}", status_line(connected, &s));
        println!("verdict: {}", verdict(&s, connected));
    }
    if flags.json {
        let duration = connected_at.map(|t| t.elapsed().as_secs_f64());
        let v = json!({
            "state": summary.state,
            "relayProtocol": ep.relay_protocol().as_str(),
            "packetsReceived": connected.then_some(s.packets_received),
            "packetsLost": connected.then_some(s.packets_lost),
            "packetsSent": connected.then_some(s.packets_sent),
            "bytesReceived": connected.then_some(s.bytes_received),
            "bytesSent": connected.then_some(s.bytes_sent),
            "rtt": s.rtt,
            "jitter": connected.then_some(s.jitter),
            "jitterBufferDelay": s.mean_jitter_buffer_delay(),
            "concealedSamples": connected.then_some(s.concealed_samples),
            "totalSamplesReceived": connected.then_some(s.total_samples),
            "mos": if connected { mos(&s) } else { None },
            "verdict": verdict(&s, connected),
            "duration": duration,
            "hops": hops.times_ms(),
            "error": summary.error,
        });
        println!("{v}");
    }
    Ok(connected)
}

type Ws = tokio_tungstenite::WebSocketStream<BoxIo>;

/// Opens the WebSocket along the route, joins `room`, waits for `joined`.
async fn join(
    dialer: &Dialer,
    site: &Upstream,
    tls: Option<&Arc<rustls::ClientConfig>>,
    room: &str,
    deadline: Instant,
) -> anyhow::Result<(Ws, Value)> {
    let stream = dialer
        .dial(site, tls, None)
        .await
        .context("cannot reach the site")?;
    let scheme = if site.tls { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{}/ws", site.host_header());
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url, stream)
        .await
        .context("WebSocket upgrade refused")?;
    ws.send(Message::text(
        json!({"type": "join", "room": room}).to_string(),
    ))
    .await?;
    loop {
        let msg = tokio::time::timeout_at(deadline.into(), ws.next())
            .await
            .context("no answer to join")?
            .context("the server closed the WebSocket")??;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match v["type"].as_str() {
            Some("joined") => return Ok((ws, v)),
            Some("error") => bail!(
                "the server refused to join: {} ({})",
                v["message"].as_str().unwrap_or(""),
                v["code"].as_str().unwrap_or("")
            ),
            _ => {}
        }
    }
}

/// The next WebSocket message; never resolves without a WebSocket.
async fn next_message(
    ws: &mut Option<Ws>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws {
        Some(ws) => ws.next().await,
        None => std::future::pending().await,
    }
}

/// Largest HTTP response read (the echo's answer is a few KiB).
const MAX_HTTP_RESPONSE: u64 = 256 * 1024;

/// One HTTP/1.1 request along the route (`GET`, or `POST` of an SDP
/// offer): status and body.
async fn http(
    dialer: &Dialer,
    site: &Upstream,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    sdp: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut s = dialer
        .dial(site, tls, None)
        .await
        .context("cannot reach the site")?;
    let method = if sdp.is_some() { "POST" } else { "GET" };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        site.host_header()
    );
    if let Some(body) = sdp {
        req.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut resp = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        (&mut s).take(MAX_HTTP_RESPONSE).read_to_end(&mut resp),
    )
    .await
    .context("the site did not answer in time")??;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("malformed HTTP status line")?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("chunked HTTP responses are not supported here");
    }
    Ok((status, body.to_owned()))
}

/// The verdict of docs/lab.md's thresholds: *usable* ("acceptable") is
/// RTT < 400 ms, loss < 2 %, jitter < 30 ms; *good* also has a one-way
/// delay (RTT/2 + jitter buffer) under G.114's 150 ms; else *poor*.
fn verdict(s: &media::CallStats, connected: bool) -> &'static str {
    let Some(rtt) = s.rtt.filter(|_| connected) else {
        return "poor";
    };
    let usable = rtt < 0.400 && s.loss_fraction() < 0.02 && s.jitter < 0.030;
    let one_way = rtt / 2.0 + s.mean_jitter_buffer_delay().unwrap_or(0.0);
    match (usable, one_way < 0.150) {
        (true, true) => "good",
        (true, false) => "usable",
        _ => "poor",
    }
}

fn snapshot(ep: &Endpoint, jb: &JitterBuffer) -> media::CallStats {
    let mut s = jb.stats();
    s.rtt = ep.rtt().map(|d| d.as_secs_f64());
    let (bytes, packets) = ep.sent();
    s.bytes_sent = bytes;
    s.packets_sent = packets;
    s
}

/// MOS by the lab's E-model (Opus rated as G.711 with PLC): one-way delay
/// = RTT/2 + the jitter buffer's mean delay + one 20 ms frame; random loss.
fn mos(s: &media::CallStats) -> Option<f64> {
    let rtt = s.rtt?;
    let jb = s.mean_jitter_buffer_delay().unwrap_or(0.0);
    let d_ms = (rtt / 2.0 + jb) * 1000.0 + 20.0;
    let r = lab::emodel::rate(
        lab::emodel::Codec::Opus,
        d_ms,
        s.loss_fraction() * 100.0,
        1.0,
    );
    Some((r.mos * 100.0).round() / 100.0)
}

fn status_line(connected: bool, s: &media::CallStats) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0} ms", v * 1000.0));
    format!(
        "{} | rtt {} | jitter {} | loss {:.1} % | mos {}",
        if connected { "connected" } else { "connecting" },
        f(s.rtt),
        f(Some(s.jitter)),
        s.loss_fraction() * 100.0,
        mos(s).map_or("-".to_owned(), |m| format!("{m:.2}")),
    )
}

/// A stream to the relay through the dialer (through Tor each dial gets
/// its own circuit: the SOCKS credentials isolate it).
async fn dial_relay(dialer: &Dialer, ep: &Upstream, trust: &RelayTrust) -> anyhow::Result<BoxIo> {
    let tls_config = if ep.tls {
        Some(connector::tls::relay_config(trust)?)
    } else {
        None
    };
    dialer
        .dial(ep, tls_config.as_ref(), None)
        .await
        .context("cannot reach the relay")
}

/// Why the caller moves its allocation to a new relay connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HopReason {
    /// The connection closed or failed.
    Broken,
    /// Nothing came from the relay for `--hop-after-stall`: not a hop
    /// yet, a probe of the relay first.
    Probe,
    /// Nothing came from the relay for `--hop-after-stall`, nor an answer
    /// to the probe for as long again.
    Stalled,
    /// `--hop-at`.
    Asked,
}

/// When to hop (RFC 8016 moves), and how long the hops took.
#[derive(Debug)]
struct Hops {
    stall: Option<Duration>,
    at: Option<Duration>,
    asked_done: bool,
    last_heard: Instant,
    broken: bool,
    /// When the hop in flight started.
    started: Option<Instant>,
    /// When the relay was probed during the current silence.
    probed: Option<Instant>,
    /// Hops in the last minute (a path that breaks again and again ends
    /// the call instead of hopping forever).
    recent: std::collections::VecDeque<Instant>,
    times: Vec<f64>,
}

/// Hops allowed per minute.
const MAX_HOPS_PER_MINUTE: usize = 5;

impl Hops {
    fn new(flags: &CallFlags) -> Self {
        Hops {
            stall: (flags.hop_after_stall > 0)
                .then(|| Duration::from_millis(flags.hop_after_stall)),
            at: flags.hop_at.map(Duration::from_secs_f64),
            asked_done: false,
            last_heard: Instant::now(),
            broken: false,
            started: None,
            probed: None,
            recent: std::collections::VecDeque::new(),
            times: Vec::new(),
        }
    }

    fn enabled(&self) -> bool {
        self.stall.is_some() || self.at.is_some()
    }

    fn is_broken(&self) -> bool {
        self.broken
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    fn broken(&mut self) {
        self.broken = true;
    }

    /// Whether to hop now, and why: only during the call, over a stream,
    /// one hop at a time.
    fn due(
        &mut self,
        now: Instant,
        connected_at: Option<Instant>,
        transport: turn::Transport,
        can_move: bool,
    ) -> Option<HopReason> {
        if !transport.is_stream() || !can_move || self.started.is_some() {
            return None;
        }
        if self.broken {
            return Some(HopReason::Broken);
        }
        let connected = connected_at?;
        if let Some(at) = self.at.filter(|_| !self.asked_done) {
            if now >= connected + at {
                self.asked_done = true;
                return Some(HopReason::Asked);
            }
        }
        // The peer's own path may be the one that stalls: each recent hop
        // doubles the wait, and a few per minute at most.
        self.recent
            .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
        if self.recent.len() >= MAX_HOPS_PER_MINUTE {
            return None;
        }
        let quiet = now.duration_since(self.last_heard.max(connected));
        let backoff = 1u32 << self.recent.len().min(4);
        let stall = self.stall? * backoff;
        if quiet < stall {
            self.probed = None;
            return None;
        }
        // Silence: the peer may just be quiet. The relay answers a probe
        // at once over a live path; no answer within another stall is a
        // dead path.
        match self.probed {
            None => {
                self.probed = Some(now);
                Some(HopReason::Probe)
            }
            Some(at) if now.duration_since(at) >= stall && self.last_heard < at => {
                self.probed = None;
                Some(HopReason::Stalled)
            }
            Some(_) => None,
        }
    }

    fn moved(&mut self, tty: bool) {
        if let Some(t) = self.started.take() {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            self.times.push(ms);
            if tty {
                eprintln!("\nmoved to a new relay connection in {ms:.0} ms");
            }
            tracing::info!("moved to a new relay connection in {ms:.0} ms");
        }
    }

    fn times_ms(&self) -> Vec<u64> {
        self.times.iter().map(|t| t.round() as u64).collect()
    }
}

/// Opens a new relay connection and moves the allocation there.
#[allow(clippy::too_many_arguments)]
async fn hop(
    ep: &mut Endpoint,
    dialer: &Dialer,
    relay: &Upstream,
    trust: &RelayTrust,
    server: SocketAddr,
    hops: &mut Hops,
    why: HopReason,
    tty: bool,
) -> anyhow::Result<TurnIo> {
    let now = Instant::now();
    hops.recent
        .retain(|t| now.duration_since(*t) < Duration::from_secs(60));
    if hops.recent.len() >= MAX_HOPS_PER_MINUTE {
        bail!("{MAX_HOPS_PER_MINUTE} moves within a minute: the path keeps failing");
    }
    hops.recent.push_back(now);
    hops.started = Some(now);
    if tty {
        eprintln!("\nrelay connection {why:?}: moving to a new one");
    }
    tracing::info!("relay connection {why:?}: moving to a new one");
    let s = dial_relay(dialer, relay, trust).await?;
    let (r, w) = tokio::io::split(s);
    let mut io = TurnIo::Stream(r, w);
    ep.move_relay(Instant::now(), server, turn::Transport::Tcp)?;
    flush(ep, &mut io).await?;
    hops.broken = false;
    hops.last_heard = Instant::now();
    Ok(io)
}

async fn flush(ep: &mut Endpoint, io: &mut TurnIo) -> anyhow::Result<()> {
    while let Some(t) = ep.poll_transmit() {
        match io {
            // A full socket buffer drops the datagram, as the network would.
            TurnIo::Udp(sock, _) => {
                let _ = sock.send(&t.payload).await;
            }
            TurnIo::Stream(_, w) => {
                w.write_all(&t.payload)
                    .await
                    .context("writing to the relay")?;
            }
        }
    }
    if let TurnIo::Stream(_, w) = io {
        w.flush().await.context("writing to the relay")?;
    }
    Ok(())
}

async fn recv(io: &mut TurnIo, buf: &mut [u8]) -> std::io::Result<usize> {
    match io {
        TurnIo::Udp(sock, _) => sock.recv(buf).await,
        TurnIo::Stream(r, _) => r.read(buf).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("http://127.0.0.1:8080/?room=x").unwrap();
        assert_eq!(t.room.as_deref(), Some("x"));
        assert_eq!(t.site.port, 8080);
        assert!(!t.site.tls);
        let t = parse_url("https://call.example.org/?a=1&room=abc-1").unwrap();
        assert!(t.site.tls);
        assert_eq!(t.site.host, "call.example.org");
        assert_eq!(t.room.as_deref(), Some("abc-1"));
        assert_eq!(parse_url("http://127.0.0.1:8080/").unwrap().room, None);
        assert!(parse_url("ftp://x/?room=a").is_err());
    }

    #[test]
    fn turn_urls() {
        let servers = json!([{"urls": ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"], "username": "u", "credential": "c"}]);
        assert_eq!(
            pick_relay(&servers, None).unwrap().url.protocol,
            RelayProtocol::Udp
        );
        assert_eq!(
            pick_relay(&servers, Some(RelayProtocol::Tcp))
                .unwrap()
                .url
                .protocol,
            RelayProtocol::Tcp
        );
        assert!(pick_relay(&servers, Some(RelayProtocol::Tls)).is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        flags: CallFlags,
    }

    fn flags(args: &[&str]) -> CallFlags {
        use clap::Parser as _;
        let argv = ["call", "http://127.0.0.1:9/?room=x"]
            .into_iter()
            .chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap().flags
    }

    fn run(f: CallFlags) -> anyhow::Result<bool> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(call(f))
    }

    #[test]
    fn hops_probe_a_silent_relay_first_then_move_and_back_off() {
        let f = flags(&[]);
        let mut h = Hops::new(&f);
        let tcp = turn::Transport::Tcp;
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Not before the call, never over UDP or without a ticket.
        assert_eq!(h.due(t0 + ms(5000), None, tcp, true), None);
        assert_eq!(
            h.due(t0 + ms(5000), Some(t0), turn::Transport::Udp, true),
            None
        );
        assert_eq!(h.due(t0 + ms(5000), Some(t0), tcp, false), None);
        // Quiet for a second: a probe, not a hop.
        h.heard(t0);
        assert_eq!(h.due(t0 + ms(900), Some(t0), tcp, true), None);
        assert_eq!(
            h.due(t0 + ms(1000), Some(t0), tcp, true),
            Some(HopReason::Probe)
        );
        assert_eq!(h.due(t0 + ms(1500), Some(t0), tcp, true), None);
        // The probe answered: nothing to do.
        h.heard(t0 + ms(1600));
        assert_eq!(h.due(t0 + ms(2000), Some(t0), tcp, true), None);
        // Silence again, and no answer to the probe: move.
        let p = t0 + ms(2600);
        assert_eq!(h.due(p, Some(t0), tcp, true), Some(HopReason::Probe));
        assert_eq!(
            h.due(p + ms(1000), Some(t0), tcp, true),
            Some(HopReason::Stalled)
        );
        // After a hop the wait doubles.
        h.recent.push_back(p + ms(1000));
        h.heard(p + ms(1000));
        assert_eq!(h.due(p + ms(2500), Some(t0), tcp, true), None);
        assert_eq!(
            h.due(p + ms(3000), Some(t0), tcp, true),
            Some(HopReason::Probe)
        );
        // A broken connection moves at once; five moves a minute at most
        // for stalls.
        h.broken();
        assert_eq!(h.due(p, Some(t0), tcp, true), Some(HopReason::Broken));
        h.broken = false;
        for _ in 0..MAX_HOPS_PER_MINUTE {
            h.recent.push_back(p);
        }
        assert_eq!(h.due(p + ms(30_000), Some(t0), tcp, true), None);
        // --hop-at: once, at its time.
        let f = flags(&["--hop-at", "4"]);
        let mut h = Hops::new(&f);
        h.heard(t0 + ms(3900));
        assert_eq!(h.due(t0 + ms(3900), Some(t0), tcp, true), None);
        h.heard(t0 + ms(4000));
        assert_eq!(
            h.due(t0 + ms(4000), Some(t0), tcp, true),
            Some(HopReason::Asked)
        );
        assert_eq!(h.due(t0 + ms(4010), Some(t0), tcp, true), None);
    }

    #[test]
    fn via_tor_takes_the_connectors_tor_settings() {
        let f = flags(&[
            "--via",
            "tor",
            "--tor-nodes",
            "europe",
            "--tor-binary",
            "/opt/tor",
        ]);
        let mut via = Via::parse(&f.via).unwrap();
        f.tor.apply(&mut via).unwrap();
        let Via::Tor(options) = via else {
            panic!("not tor: {via:?}")
        };
        assert_eq!(options.nodes, connector::TorNodes::Europe);
        assert_eq!(options.binary, Some(PathBuf::from("/opt/tor")));
        // Without --tor-binary: embedded Tor (in a build with it), which
        // cannot honour a country preset: refused, naming the fix.
        let f = flags(&["--via", "tor", "--tor-nodes", "europe"]);
        let mut via = Via::parse(&f.via).unwrap();
        if cfg!(feature = "arti") {
            let e = f.tor.apply(&mut via).unwrap_err().to_string();
            assert!(e.contains("--tor-binary"), "{e}");
        }
        // Tor settings without tor are refused.
        let f = flags(&["--tor-nodes", "europe"]);
        let mut via = Via::parse(&f.via).unwrap();
        assert!(f.tor.apply(&mut via).is_err());
    }

    #[test]
    fn via_tor_is_refused_with_udp_and_reports_a_tor_that_cannot_start() {
        // TURN over UDP cannot go through tor: refused before tor starts.
        let e = run(flags(&["--via", "tor", "--turn-transport", "udp"])).unwrap_err();
        assert!(crate::message(&e).contains("streams only"), "{e:#}");
        // The tor binary of the flags is the one launched; it does not exist.
        let e = run(flags(&["--via", "tor", "--tor-binary", "/nonexistent/tor"])).unwrap_err();
        let m = crate::message(&e);
        assert!(
            m.contains("cannot start tor") && m.contains("/nonexistent/tor"),
            "{m}"
        );
    }
}
