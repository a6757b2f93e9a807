//! Admin-API apply throughput with durable commits, against etcd (the store behind a
//! Kubernetes API server, i.e. where Sidero's objects live) in the same run.
//!
//! usage: apply_bench --appliance http://127.0.0.1:P --token T --etcd http://127.0.0.1:Q
//!                    [--count N] [--concurrency C]
//! Each appliance write is one `Apply` of one Server document; each etcd write is one
//! `/v3/kv/put` of the same document's JSON through etcd's HTTP gateway. Both stores fsync
//! before they acknowledge. Prints objects/s and latency percentiles for each.

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
    prefix: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        appliance: String::new(),
        token: String::new(),
        etcd: None,
        count: 2000,
        concurrency: 16,
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
            "--prefix" => a.prefix = v,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.appliance.is_empty() {
        bail!("--appliance is required");
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

impl Run {
    fn report(&mut self, what: &str) -> f64 {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| self.latencies[((n as f64 * p) as usize).min(n - 1)];
        let rate = n as f64 / self.wall.as_secs_f64();
        println!(
            "{what:<10} {n} objects in {:.2}s = {rate:.0} objects/s; latency p50 {:.2} ms, p99 {:.2} ms",
            self.wall.as_secs_f64(),
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
        rate
    }
}

async fn bench_appliance(a: &Args) -> Result<Run> {
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
        let (count, conc, prefix) = (a.count, a.concurrency, a.prefix.clone());
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

async fn bench_etcd(a: &Args, url: &str) -> Result<Run> {
    let host = url.trim_start_matches("http://").to_string();
    let start = appliance::clock::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (count, conc, host, prefix) = (a.count, a.concurrency, host.clone(), a.prefix.clone());
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
        "apply bench: {} objects, {} concurrent writers, durable commits",
        a.count, a.concurrency
    );
    let ours = bench_appliance(&a).await?.report("appliance");
    if let Some(url) = &a.etcd {
        let peer = bench_etcd(&a, url).await?.report("etcd");
        println!("ratio appliance/etcd = {:.2}", ours / peer);
    }
    Ok(())
}
