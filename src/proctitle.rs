//! Process titles, as gunicorn's and nginx's: `ferrogate: master [main:app]` and
//! `ferrogate: worker 2 [main:app]` in ps and top, instead of a python command line.
//!
//! ps reads a process's command line from the memory its arguments were passed in
//! (between arg_start and arg_end in /proc/self/stat); the title is written there,
//! NUL-padded, so it can be no longer than the original command line. Python keeps its
//! own copy of the arguments (sys.argv), so rewriting the original changes nothing the
//! app sees. The kernel's short name (comm, 15 bytes) is set too, for top and pkill.

/// Sets the title; silently does nothing where the kernel does not say where the
/// arguments are.
pub fn set(title: &str) {
    set_comm("ferrogate");
    let Some((start, end)) = argument_area() else { return };
    let room = end.saturating_sub(start);
    if room < 2 {
        return;
    }
    let bytes = title.as_bytes();
    // Keep the last byte NUL: a command line whose last byte is not NUL tells the kernel
    // it spills into the environment, and ps would show that too.
    let n = bytes.len().min(room - 1);
    // SAFETY: [start, end) is this process's own argument memory, as the kernel reports
    // it for this very process: mapped, writable (it lies on the initial stack) and
    // alive until exit. No Rust reference points into it (Python copied the arguments at
    // start), so writing through a raw pointer aliases nothing.
    unsafe {
        let area = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, n);
        std::ptr::write_bytes(area.add(n), 0, room - n);
    }
}

fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `buf`.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

/// arg_start and arg_end (fields 48 and 49 of /proc/self/stat, Linux 3.5 and later).
fn argument_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_argument_area(&stat)
}

fn parse_argument_area(stat: &str) -> Option<(usize, usize)> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the
    // fields that follow start after the last ')'. The first of them is field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    (end > start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_argument_area_after_an_awkward_name() {
        let mut stat = String::from("123 (a ) b) S");
        for field in 4..=52 {
            stat.push_str(&format!(" {}", match field {
                48 => 1000,
                49 => 1064,
                n => n,
            }));
        }
        assert_eq!(parse_argument_area(&stat), Some((1000, 1064)));
        assert_eq!(parse_argument_area("1 (x) S 2 3"), None);
        assert!(argument_area().is_some(), "this kernel reports arg_start/arg_end");
    }
}
