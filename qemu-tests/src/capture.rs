//! `tcpdump -v` on the lab bridge with a filter, its output in a log file in the lab
//! directory: what went over the wire, seen by an observer independent of the appliance
//! (which packets a VM sent, with their decoded DHCP options; whether any TFTP request was
//! made at all). Drop kills tcpdump.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::lab::Lab;
use crate::netns::BRIDGE;
use crate::process::Guarded;

#[derive(Debug)]
pub struct Capture {
    process: Guarded,
}

impl Capture {
    /// Starts `tcpdump -i <bridge> -n -l -tt -v <filter>` into `<name>.tcpdump.log` and
    /// waits until it listens.
    pub fn start(lab: &Lab, name: &str, filter: &str) -> Result<Capture> {
        let mut cmd = lab.ns().command("tcpdump");
        cmd.args(["-i", BRIDGE, "-n", "-l", "-tt", "-v", filter]);
        let log = lab.dir().join(format!("{name}.tcpdump.log"));
        let mut process = Guarded::spawn("tcpdump", cmd, &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process.log().contains("listening on") {
            if let Some(status) = process.exited() {
                bail!("tcpdump exited ({status}): {}", process.log());
            }
            if Instant::now() >= deadline {
                bail!("tcpdump did not start: {}", process.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Capture { process })
    }

    /// Everything tcpdump printed so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
