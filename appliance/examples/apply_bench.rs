//! Admin-API apply throughput with durable commits, against etcd (the store behind a
//! Kubernetes API server, i.e. where Sidero's objects live) in the same run.
//!
//! usage: apply_bench --appliance http://127.0.0.1:P --token T --etcd http://127.0.0.1:Q
//!                    [--count N] [--concurrency C] [--rounds R]
//! Each appliance write is one `Apply` of one Server document; each etcd write is one
//! `/v3/kv/put` of the same document's JSON through etcd's HTTP gateway. Both stores fsync
//! before they acknowledge. Prints objects/s and latency percentiles for each.
//!
//! On a shared machine the load of other work swings both stores' rates, so the two take
//! turns: R rounds of N new objects each (box, etcd, box, etcd, …), every round with the
//! 1-minute load average. The summary is the median of each store's rounds and the
//! median of the per-round ratios (each from two runs a few seconds apart).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use appliance_rpc::admin::ApplyRequest;
use appliance_rpc::admin::admin_client::AdminClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    appliance: String,
    token: String,
    etcd: Option<String>,
    count: usize,
    concurrency: usize,
    rounds: usize,
    prefix: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        appliance: String::new(),
        token: String::new(),
        etcd: None,
        count: 2000,
        concurrency: 16,
        rounds: 5,
        prefix: "bench".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--appliance" => a.appliance = v,
            "--token" => a.token = v,
            "--etcd" => a.etcd = Some(v),
            "--count" => a.count = v.parse()?,
            "--concurrency" => a.concurrency = v.parse()?,
            "--rounds" => a.rounds = v.parse()?,
            "--prefix" => a.prefix = v,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.appliance.is_empty() {
        bail!("--appliance is required");
    }
    if a.rounds == 0 || a.count == 0 {
        bail!("--rounds and --count must be at least 1");
    }
    Ok(a)
}

fn doc(name: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n  labels:\n    rack: r1\nspec:\n  hostname: {name}.rack\n  accepted: true\n"
    )
}

struct Run {
    wall: Duration,
    latencies: Vec<Duration>,
}

/// What one round of one store measured.
#[derive(Clone, Copy)]
struct Measured {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Run {
    fn measure(mut self) -> Measured {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| self.latencies[((n as f64 * p) as usize).min(n - 1)];
        Measured {
            rate: n as f64 / self.wall.as_secs_f64(),
            p50_ms: pct(0.50).as_secs_f64() * 1e3,
            p99_ms: pct(0.99).as_secs_f64() * 1e3,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The 1-minute load average (`/proc/loadavg`), or NaN where there is none.
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

fn line(what: &str, m: &Measured) -> String {
    format!(
        "{what} {:>6.0}/s p50 {:.2} p99 {:.2} ms",
        m.rate, m.p50_ms, m.p99_ms
    )
}

async fn bench_appliance(a: &Args, prefix: &str) -> Result<Run> {
    let channel = tonic::transport::Channel::from_shared(a.appliance.clone())?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {}", a.token).parse()?;
    let client = AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", bearer.clone());
        Ok(r)
    });
    let start = appliance::clock::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let mut client = client.clone();
        let (count, conc, prefix) = (a.count, a.concurrency, prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..count).step_by(conc) {
                let t = appliance::clock::now();
                client
                    .apply(ApplyRequest {
                        documents: doc(&format!("{prefix}-{i}")),
                        dry_run: false,
                    })
                    .await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Run {
        wall: start.elapsed(),
        latencies,
    })
}

/// One keep-alive HTTP/1.1 connection to etcd's JSON gateway.
async fn etcd_put(conn: &mut BufReader<TcpStream>, host: &str, body: &str) -> Result<()> {
    let req = format!(
        "POST /v3/kv/put HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).await?;
    let mut status = String::new();
    conn.read_line(&mut status).await?;
    if !status.contains(" 200 ") {
        bail!("etcd answered {status}");
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await?;
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut sink = vec![0u8; len];
    conn.read_exact(&mut sink).await?;
    Ok(())
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn bench_etcd(a: &Args, url: &str, prefix: &str) -> Result<Run> {
    let host = url.trim_start_matches("http://").to_string();
    let start = appliance::clock::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (count, conc, host, prefix) =
            (a.count, a.concurrency, host.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = BufReader::new(TcpStream::connect(&host).await?);
            let mut lat = Vec::new();
            for i in (w..count).step_by(conc) {
                let name = format!("{prefix}-{i}");
                let value = serde_json::to_string(&yaml_serde::from_str::<serde_json::Value>(
                    &doc(&name),
                )?)?;
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    b64(format!("/registry/metal.sidero.dev/servers/{name}").as_bytes()),
                    b64(value.as_bytes())
                );
                let t = appliance::clock::now();
                etcd_put(&mut conn, &host, &body).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Run {
        wall: start.elapsed(),
        latencies,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = parse_args()?;
    println!(
        "apply bench: {} rounds of {} new objects, {} concurrent writers, durable commits",
        a.rounds, a.count, a.concurrency
    );
    let (mut ours, mut peers, mut ratios, mut loads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.rounds {
        let prefix = format!("{}-r{r}", a.prefix);
        let l = load();
        let box_ = bench_appliance(&a, &prefix).await?.measure();
        let mut out = format!("round {r}: load {l:.1}  {}", line("appliance", &box_));
        ours.push(box_);
        loads.push(l);
        if let Some(url) = &a.etcd {
            let etcd = bench_etcd(&a, url, &prefix).await?.measure();
            out += &format!(
                "  {}  ratio {:.2}",
                line("etcd", &etcd),
                box_.rate / etcd.rate
            );
            ratios.push(box_.rate / etcd.rate);
            peers.push(etcd);
        }
        println!("{out}");
    }
    let med = |v: &[Measured], f: fn(&Measured) -> f64| median(v.iter().map(f).collect());
    println!(
        "median of {} rounds (load {:.1}-{:.1}): appliance {:.0} objects/s, p50 {:.2} ms, p99 {:.2} ms",
        a.rounds,
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        med(&ours, |m| m.rate),
        med(&ours, |m| m.p50_ms),
        med(&ours, |m| m.p99_ms),
    );
    if !peers.is_empty() {
        println!(
            "median of {} rounds: etcd {:.0} objects/s, p50 {:.2} ms, p99 {:.2} ms",
            a.rounds,
            med(&peers, |m| m.rate),
            med(&peers, |m| m.p50_ms),
            med(&peers, |m| m.p99_ms),
        );
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "ratio appliance/etcd at {} writers: median {:.2} (rounds {})",
            a.concurrency,
            median(ratios.clone()),
            each.join(" ")
        );
    }
    Ok(())
}
