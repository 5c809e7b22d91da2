//! The master's ban list (--ban-after): it gathers the strikes workers report, bans,
//! logs, tells every worker, keeps the list in the state file, and lifts bans as they
//! expire or on `ferrogate bans unban`. The rules are `keeper`'s, the file `state`'s;
//! this is where they meet the master's loop.

pub mod keeper;
mod state;

use std::net::IpAddr;
use std::path::PathBuf;

use super::supervise::Order;
use super::{Master, policy::WorkerId};
use crate::config::front::BanConfig;
use crate::control::{BanStatus, Reply};
use crate::ipc::{Strike, ToWorker};
use keeper::Keeper;

pub struct BanList {
    keeper: Option<Keeper>,
    /// Where the list is kept (none: this run's bans end with it).
    file: Option<PathBuf>,
}

impl BanList {
    /// The list of a new master: the state file's bans that are not over yet.
    pub fn start(config: &BanConfig) -> BanList {
        let Some(mut keeper) = Keeper::new(config) else { return BanList { keeper: None, file: None } };
        let file = Some(config.state_file.clone()).filter(|f| !f.as_os_str().is_empty());
        match &file {
            Some(path) => match state::load(path) {
                Ok(bans) => {
                    let n = keeper.restore(bans, now_ms());
                    crate::info!("Ban list: {} ({n} address{} banned)", path.display(), if n == 1 { "" } else { "es" });
                }
                Err(e) => crate::error!("{e}"),
            },
            None => crate::info!("Ban list: kept in memory only (no state file)"),
        }
        BanList { keeper: Some(keeper), file }
    }

    fn save(&self) {
        if let (Some(keeper), Some(path)) = (&self.keeper, &self.file) {
            if let Err(e) = state::save(path, &keeper.bans().collect::<Vec<_>>()) {
                crate::error!("{e}");
            }
        }
    }

    fn addresses(&self) -> Vec<IpAddr> {
        self.keeper.as_ref().map(Keeper::addresses).unwrap_or_default()
    }
}

impl Master {
    /// A worker's batch of strikes (`ToMaster::Strikes`).
    pub(super) fn on_strikes(&mut self, strikes: Vec<Strike>) {
        let Some(keeper) = self.bans.keeper.as_mut() else { return };
        let now = now_ms();
        let mut banned = false;
        for s in strikes {
            if let Some(line) = keeper.strike(now, s.ip, s.status, s.count) {
                crate::warn!("{line}");
                banned = true;
            }
        }
        if banned {
            self.bans_changed();
        }
    }

    /// At each tick: the bans that are over are lifted.
    pub(super) fn expire_bans(&mut self) {
        let Some(keeper) = self.bans.keeper.as_mut() else { return };
        let lifted = keeper.expire(now_ms());
        for ip in &lifted {
            crate::info!("ban on {ip} lifted (expired)");
        }
        if !lifted.is_empty() {
            self.bans_changed();
        }
    }

    /// `ferrogate bans list` (address None) and `ferrogate bans unban ADDR`.
    pub(super) fn on_bans_control(&mut self, unban: Option<&str>) -> Reply {
        let Some(keeper) = self.bans.keeper.as_mut() else {
            return Reply::refused("bans are off on this server (--ban-after N turns them on)");
        };
        let Some(address) = unban else {
            let now = now_ms();
            let list = keeper
                .bans()
                .map(|b| BanStatus { address: b.address.to_string(), until: b.until, remaining_secs: (b.until * 1000).saturating_sub(now) / 1000, reason: b.reason.clone() })
                .collect::<Vec<_>>();
            let mut reply = Reply::done(format!("{} address{} banned", list.len(), if list.len() == 1 { "" } else { "es" }));
            reply.bans = Some(list);
            return reply;
        };
        let ip: IpAddr = match address.trim().trim_matches(['[', ']']).parse() {
            Ok(ip) => ip,
            Err(_) => return Reply::refused(format!("'{address}' is not an IP address; write e.g. 203.0.113.9 or 2001:db8::1")),
        };
        if !keeper.unban(ip, now_ms()) {
            return Reply::refused(format!("{ip} is not banned (`ferrogate bans list` shows who is)"));
        }
        crate::info!("ban on {ip} lifted by `ferrogate bans unban`");
        self.bans_changed();
        Reply::done(format!("ban on {ip} lifted"))
    }

    /// A worker just started: it gets the list before its first connection is likely.
    pub(super) fn send_bans_to(&self, id: WorkerId) {
        let list = self.bans.addresses();
        if !list.is_empty() {
            self.order(id, Order::Send(ToWorker::Bans(list)));
        }
    }

    /// The list changed: to the file, and to every worker.
    fn bans_changed(&self) {
        self.bans.save();
        let list = self.bans.addresses();
        for worker in self.workers.values() {
            let _ = worker.send(Order::Send(ToWorker::Bans(list.clone())));
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
