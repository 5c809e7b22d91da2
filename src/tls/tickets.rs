//! Session tickets every worker can open.
//!
//! All workers accept from one queue, so a client's next connection usually lands on
//! another worker than the one that issued its ticket. rustls's own ticketer draws a key
//! per process, which would make resumption work one time in N. Here the master draws
//! the key and hands it to every worker; it rotates it every ROTATION and workers keep
//! the previous one, so a ticket lives at most two rotations (forward secrecy is bounded
//! by key erasure, not by the lifetime hint, as RFC 8446 4.6.1 says).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use serde::{Deserialize, Serialize};
use std::sync::RwLock;
use std::time::Duration;

/// How often the master draws a new ticket key.
pub const ROTATION: Duration = Duration::from_secs(6 * 3600);
const KEY_LEN: usize = 32;
const ID_LEN: usize = 4;

/// A ticket key as the master sends it.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketKey {
    pub id: u32,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKey({})", self.id)
    }
}

impl TicketKey {
    /// A fresh random key; `id` only needs to differ from the previous key's.
    pub fn generate(id: u32) -> Result<Self, String> {
        let mut secret = vec![0u8; KEY_LEN];
        SystemRandom::new().fill(&mut secret).map_err(|_| "the system's random generator failed".to_string())?;
        Ok(TicketKey { id, secret })
    }
}

struct Keys {
    current: (u32, LessSafeKey),
    previous: Option<(u32, LessSafeKey)>,
}

/// The worker's ticketer: encrypts with the current key, opens with either.
pub struct SharedTicketer {
    keys: RwLock<Keys>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedTicketer")
    }
}

fn aead(key: &TicketKey) -> Result<LessSafeKey, String> {
    UnboundKey::new(&AES_256_GCM, &key.secret).map(LessSafeKey::new).map_err(|_| "a ticket key of the wrong length".to_string())
}

impl SharedTicketer {
    /// `keys[0]` is current, `keys[1]` (if any) the previous one.
    pub fn new(keys: &[TicketKey]) -> Result<Self, String> {
        Ok(SharedTicketer { keys: RwLock::new(Self::build(keys)?), rng: SystemRandom::new() })
    }

    pub fn update(&self, keys: &[TicketKey]) -> Result<(), String> {
        let built = Self::build(keys)?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = built;
        Ok(())
    }

    fn build(keys: &[TicketKey]) -> Result<Keys, String> {
        let current = keys.first().ok_or("no ticket key")?;
        let previous = match keys.get(1) {
            Some(k) => Some((k.id, aead(k)?)),
            None => None,
        };
        Ok(Keys { current: (current.id, aead(current)?), previous })
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATION.as_secs() as u32
    }

    /// key id || nonce || ciphertext and tag; the id is authenticated as AAD.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let (id, key) = &keys.current;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.to_be_bytes()), &mut body).ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < ID_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let id = u32::from_be_bytes(cipher[..ID_LEN].try_into().ok()?);
        let nonce: [u8; NONCE_LEN] = cipher[ID_LEN..ID_LEN + NONCE_LEN].try_into().ok()?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let key = if keys.current.0 == id {
            &keys.current.1
        } else {
            match &keys.previous {
                Some((prev, key)) if *prev == id => key,
                _ => return None,
            }
        };
        let mut body = cipher[ID_LEN + NONCE_LEN..].to_vec();
        let plain = key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(id.to_be_bytes()), &mut body).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_in_another_worker_and_after_one_rotation_only() {
        let k1 = TicketKey::generate(1).unwrap();
        let k2 = TicketKey::generate(2).unwrap();
        let k3 = TicketKey::generate(3).unwrap();
        let issuer = SharedTicketer::new(std::slice::from_ref(&k1)).unwrap();
        let other = SharedTicketer::new(std::slice::from_ref(&k1)).unwrap();
        let ticket = issuer.encrypt(b"session state").unwrap();
        assert_eq!(other.decrypt(&ticket).unwrap(), b"session state");
        other.update(&[k2.clone(), k1.clone()]).unwrap();
        assert_eq!(other.decrypt(&ticket).unwrap(), b"session state", "the previous key still opens it");
        other.update(&[k3, k2]).unwrap();
        assert!(other.decrypt(&ticket).is_none(), "two rotations later it is gone");
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let t = SharedTicketer::new(&[TicketKey::generate(7).unwrap()]).unwrap();
        let mut ticket = t.encrypt(b"x").unwrap();
        let last = ticket.len() - 1;
        ticket[last] ^= 1;
        assert!(t.decrypt(&ticket).is_none());
        assert!(t.decrypt(&[0; 5]).is_none());
        assert!(t.decrypt(&[]).is_none());
    }
}
