//! What the master shares with its workers in memory, handed to each worker it starts
//! right after the listeners, in this order: the worker board (always: it spreads
//! connections over the workers) and the rate-limit table (with --rate-limit).

use std::collections::HashMap;
use std::os::fd::RawFd;

use super::policy::WorkerId;
use crate::config::Config;
use crate::http::balance::Board;
use crate::http::rate_limit::shm::Table;

pub struct Shared {
    board: Board,
    rate: Option<Table>,
    /// Each running worker's pid: its seat on the board is freed when it exits.
    pids: HashMap<WorkerId, u32>,
}

impl Shared {
    pub fn create(config: &Config) -> Result<Shared, String> {
        let board = Board::create().map_err(|e| format!("cannot create the worker board in shared memory: {e}"))?;
        let rate = config.front.rate.enabled().then(Table::create).transpose();
        let rate = rate.map_err(|e| format!("cannot create the rate-limit table (--rate-limit) in shared memory: {e}"))?;
        Ok(Shared { board, rate, pids: HashMap::new() })
    }

    /// The descriptors that follow the listeners (worker::board and worker::rate_limits
    /// find them there).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> {
        [self.board.fd(), self.rate.as_ref().and_then(Table::fd)].into_iter().flatten()
    }

    pub fn started(&mut self, id: WorkerId, pid: u32) {
        self.pids.insert(id, pid);
    }

    pub fn exited(&mut self, id: WorkerId) {
        if let Some(pid) = self.pids.remove(&id) {
            self.board.release(pid);
        }
    }
}
