//! Synthetic agents: registers N servers over the agent gRPC API (`api.Agent/CreateServer`,
//! each with a realistic v1alpha2 hardware report), then sends one round of heartbeats and
//! one of NextAction per server. Prints calls/s and latency percentiles per phase.
//!
//! usage: agent_load --endpoint http://127.0.0.1:P [--servers N] [--concurrency C]
//! Every CreateServer is durable on the box (group-committed, fsync'd) before its answer.
//! As on a real PXE segment, every server calls from its own address
//! (`synthetic_agent::source`, 127.16/12 on loopback: the box caps registrations per address
//! and binds each agent boot to the address that registered it); each call opens its own
//! connection from that address, so the latencies include the TCP + HTTP/2 handshake.
//! The agents run as tasks of one thread (a `current_thread` runtime): each still does per
//! call exactly what a booting agent does (its own connection, handshake, RPC and payload),
//! without a multi-thread runtime's cross-thread wake-ups, since this client shares the
//! box's cores (client CPU per registration, load 6.5-7: 212-243 µs multi-thread, 169-207 µs
//! on one thread).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb};
use tonic::transport::Channel;

#[path = "../tests/synthetic_agent/mod.rs"]
mod synthetic_agent;
use synthetic_agent::{channel_from, hardware, source, uuid};

struct Args {
    endpoint: String,
    servers: usize,
    concurrency: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        endpoint: String::new(),
        servers: 10_000,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoint" => a.endpoint = v,
            "--servers" => a.servers = v.parse()?,
            "--concurrency" => a.concurrency = v.parse()?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    if a.endpoint.is_empty() {
        bail!("--endpoint is required");
    }
    Ok(a)
}

#[derive(Clone, Copy)]
enum Phase {
    Register,
    Heartbeat,
    NextAction,
}

async fn call(c: &mut AgentClient<Channel>, phase: Phase, i: usize) -> Result<()> {
    match phase {
        Phase::Register => {
            c.create_server(pb::CreateServerRequest {
                hardware: Some(hardware(i)),
                hostname: format!("node-{i}"),
            })
            .await?;
        }
        Phase::Heartbeat => {
            c.heartbeat(pb::HeartbeatRequest { uuid: uuid(i) }).await?;
        }
        Phase::NextAction => {
            c.next_action(pb::NextActionRequest { uuid: uuid(i) })
                .await?;
        }
    }
    Ok(())
}

async fn run(args: &Args, phase: Phase, name: &str) -> Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = appliance::clock::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let next = next.clone();
        let n = args.servers;
        let endpoint = args.endpoint.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let t = appliance::clock::now();
                let mut c = AgentClient::new(
                    channel_from(&endpoint, source(i))
                        .await
                        .with_context(|| format!("connect from {}", source(i)))?,
                );
                call(&mut c, phase, i)
                    .await
                    .with_context(|| format!("server {i} from {}", source(i)))?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        });
    }
    let mut lat: Vec<Duration> = Vec::with_capacity(args.servers);
    while let Some(r) = tasks.join_next().await {
        lat.extend(r??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "{name:<12} {:>6} calls in {:>7.2} s = {:>8.0} /s   p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        lat.len(),
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        p(0.50).as_secs_f64() * 1e3,
        p(0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    println!(
        "{} synthetic agents, each from its own address, {} concurrent, one connection per call",
        args.servers, args.concurrency
    );
    run(&args, Phase::Register, "register").await?;
    run(&args, Phase::Heartbeat, "heartbeat").await?;
    run(&args, Phase::NextAction, "next-action").await?;
    Ok(())
}
