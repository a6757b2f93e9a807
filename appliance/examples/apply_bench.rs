//! Admin-API apply throughput with durable commits, against etcd (the store behind a
//! Kubernetes API server, i.e. where Sidero's objects live) in the same run.
//!
//! usage: apply_bench --appliance http://127.0.0.1:P --token T --etcd http://127.0.0.1:Q
//!                    [--count N] [--concurrency C] [--rounds R]
//!                    [--appliance-pid PID] [--etcd-pid PID] [--fsync-probe DIR]
//! Each appliance write is one `Apply` of one Server document; each etcd write is one
//! gRPC `KV/Put` of the same document's JSON. Both stores fsync before they acknowledge.
//! Both clients are tonic over one HTTP/2 connection shared by the writers. Prints
//! objects/s and latency percentiles for each, and the CPU time per object of this client
//! and (given its pid) of the store: both share the machine's cores, so a heavier client on
//! one side would slow that side's store. With `--fsync-probe DIR` each round also prints the
//! median time of a 4 KiB overwrite + `fdatasync` in DIR (the stores' disk) before it: both
//! stores wait for such flushes, and on a shared virtual disk their time swings (0.2-4 ms
//! within minutes) with other tenants' writes, and both stores' rates with it.
//!
//! On a shared machine the load of other work swings both stores' rates, so the two take
//! turns: R rounds of N new objects each (box, etcd, box, etcd, …), every round with the
//! 1-minute load average. The summary is the median of each store's rounds and the
//! median of the per-round ratios (each from two runs a few seconds apart).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use appliance_rpc::admin::ApplyRequest;
use appliance_rpc::admin::admin_client::AdminClient;

struct Args {
    appliance: String,
    token: String,
    etcd: Option<String>,
    count: usize,
    concurrency: usize,
    rounds: usize,
    prefix: String,
    appliance_pid: Option<u32>,
    etcd_pid: Option<u32>,
    fsync_probe: Option<std::path::PathBuf>,
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
        appliance_pid: None,
        etcd_pid: None,
        fsync_probe: None,
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
            "--appliance-pid" => a.appliance_pid = Some(v.parse()?),
            "--etcd-pid" => a.etcd_pid = Some(v.parse()?),
            "--fsync-probe" => a.fsync_probe = Some(v.into()),
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
    /// CPU time per object of this client, µs.
    client_us: f64,
    /// CPU time per object of the store's process, µs (NaN without its pid).
    server_us: f64,
}

/// CPU time a process has run, ns: the sum over its threads (`/proc/PID/task/*/schedstat`,
/// nanoseconds where `/proc/PID/stat` counts 10 ms ticks). NaN where it cannot be read.
fn cpu_ns(pid: Option<u32>) -> f64 {
    let Some(dir) = pid.map(|p| format!("/proc/{p}/task")) else {
        return f64::NAN;
    };
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return f64::NAN;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

impl Run {
    /// `client_ns`, `server_ns`: the CPU time this client and the store ran during it.
    fn measure(mut self, client_ns: f64, server_ns: f64) -> Measured {
        self.latencies.sort();
        let n = self.latencies.len();
        let pct = |p: f64| self.latencies[((n as f64 * p) as usize).min(n - 1)];
        Measured {
            rate: n as f64 / self.wall.as_secs_f64(),
            p50_ms: pct(0.50).as_secs_f64() * 1e3,
            p99_ms: pct(0.99).as_secs_f64() * 1e3,
            client_us: client_ns / n as f64 / 1e3,
            server_us: server_ns / n as f64 / 1e3,
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

/// Median time of 20 overwrites of one 4 KiB block in `dir`, each flushed with `fdatasync`
/// (the file is written and flushed once first, so that each flush is data only).
fn fsync_probe(dir: &std::path::Path) -> Result<Duration> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path)?;
    let block = [0x5a_u8; 4096];
    file.write_all_at(&block, 0)?;
    file.sync_all()?;
    let mut times = Vec::new();
    for _ in 0..20 {
        file.write_all_at(&block, 0)?;
        let t = appliance::clock::now();
        file.sync_data()?;
        times.push(t.elapsed());
    }
    std::fs::remove_file(&path)?;
    times.sort();
    Ok(times[times.len() / 2])
}

fn line(what: &str, m: &Measured) -> String {
    format!(
        "{what} {:>6.0}/s p50 {:.2} p99 {:.2} ms cpu/obj {:.0}+{:.0} us",
        m.rate, m.p50_ms, m.p99_ms, m.server_us, m.client_us
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

/// etcd's `etcdserverpb.PutRequest`, the two fields a put of a new key sets.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `etcdserverpb.PutResponse`; its fields (header, prev_kv) are not read.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// The object as the JSON etcd stores for it (what `doc(name)` holds).
fn json(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"metal.sidero.dev/v1alpha2","kind":"Server","metadata":{{"labels":{{"rack":"r1"}},"name":"{name}"}},"spec":{{"accepted":true,"hostname":"{name}.rack"}}}}"#
    )
}

/// etcd through its gRPC API (`etcdserverpb.KV/Put`), as the Kubernetes API server and
/// etcd's own `benchmark put` reach it: one HTTP/2 connection shared by the writers, the
/// same client stack (tonic) and the same sharing as the appliance's side.
async fn bench_etcd(a: &Args, url: &str, prefix: &str) -> Result<Run> {
    let channel = tonic::transport::Channel::from_shared(url.to_string())?
        .connect()
        .await?;
    let start = appliance::clock::now();
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let (count, conc, prefix) = (a.count, a.concurrency, prefix.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for i in (w..count).step_by(conc) {
                let t = appliance::clock::now();
                let name = format!("{prefix}-{i}");
                let put = PutRequest {
                    key: format!("/registry/metal.sidero.dev/servers/{name}").into_bytes(),
                    value: json(&name).into_bytes(),
                };
                grpc.ready().await?;
                grpc.unary::<_, PutResponse, _>(
                    tonic::Request::new(put),
                    tonic::codegen::http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                    tonic_prost::ProstCodec::default(),
                )
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

/// Runs one store's round and measures it with the CPU time this client and the store's
/// process (`pid`) ran meanwhile.
async fn timed(pid: Option<u32>, run: impl Future<Output = Result<Run>>) -> Result<Measured> {
    let (client, server) = (cpu_ns(Some(std::process::id())), cpu_ns(pid));
    let run = run.await?;
    Ok(run.measure(
        cpu_ns(Some(std::process::id())) - client,
        cpu_ns(pid) - server,
    ))
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
        let probe = match &a.fsync_probe {
            Some(dir) => format!(
                "  fdatasync {:.0} us",
                fsync_probe(dir)?.as_secs_f64() * 1e6
            ),
            None => String::new(),
        };
        let box_ = timed(a.appliance_pid, bench_appliance(&a, &prefix)).await?;
        let mut out = format!(
            "round {r}: load {l:.1}{probe}  {}",
            line("appliance", &box_)
        );
        ours.push(box_);
        loads.push(l);
        if let Some(url) = &a.etcd {
            let etcd = timed(a.etcd_pid, bench_etcd(&a, url, &prefix)).await?;
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
        "median of {} rounds (load {:.1}-{:.1}): appliance {:.0} objects/s, p50 {:.2} ms, p99 {:.2} ms, cpu/obj {:.0} us (client {:.0} us)",
        a.rounds,
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        med(&ours, |m| m.rate),
        med(&ours, |m| m.p50_ms),
        med(&ours, |m| m.p99_ms),
        med(&ours, |m| m.server_us),
        med(&ours, |m| m.client_us),
    );
    if !peers.is_empty() {
        println!(
            "median of {} rounds: etcd {:.0} objects/s, p50 {:.2} ms, p99 {:.2} ms, cpu/obj {:.0} us (client {:.0} us)",
            a.rounds,
            med(&peers, |m| m.rate),
            med(&peers, |m| m.p50_ms),
            med(&peers, |m| m.p99_ms),
            med(&peers, |m| m.server_us),
            med(&peers, |m| m.client_us),
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
