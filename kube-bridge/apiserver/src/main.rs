//! `kube-test-apiserver [--listen ADDR] [--retain-events N] [--kubeconfig FILE]`: the in-test
//! API server as a process, for tests whose bridge runs where the test process cannot serve
//! (qemu-tests' lab network namespace). Prints `listening on http://ADDR` once it serves,
//! writes a kubeconfig for it when asked, and serves until killed. Test tooling, never shipped.

use std::path::PathBuf;

use kube_test_apiserver::ApiServer;

fn usage(problem: &str) -> ! {
    eprintln!(
        "kube-test-apiserver: {problem}\nusage: kube-test-apiserver [--listen ADDR] [--retain-events N] [--kubeconfig FILE]"
    );
    std::process::exit(2)
}

fn main() {
    let mut listen = "127.0.0.1:0".to_string();
    let mut retain = 100_000usize;
    let mut kubeconfig: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--listen" => listen = value(),
            "--retain-events" => {
                retain = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--retain-events takes a number"))
            }
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value())),
            "--help" | "-h" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let listener = std::net::TcpListener::bind(&listen)
        .unwrap_or_else(|e| usage(&format!("cannot listen on {listen}: {e}")));
    let server = ApiServer::start_on(listener, retain);
    if let Some(path) = kubeconfig {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let written = server.kubeconfig(dir);
        if written != path {
            std::fs::rename(&written, &path)
                .unwrap_or_else(|e| usage(&format!("kubeconfig {}: {e}", path.display())));
        }
    }
    println!("listening on {}", server.url());
    loop {
        std::thread::park();
    }
}
