//! The run's own resource limits: the supervisor puts every new worker under the server's
//! `[workers]` limits (before the agent is known, for pre-spawned workers); once the job has
//! arrived the worker lowers them to its agent's `[limits]` (`memory_mb`, `cpu_time`,
//! `open_files`). Limits can only be lowered, so an agent never gets more than the server allows.

use caxton_ipc::agent::LimitsSpec;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Lowers this process's limits to `limits` where they are below the current ones.
pub fn apply(limits: &LimitsSpec) -> nix::Result<()> {
    let cpu = limits.cpu_time_ms.div_ceil(1000).max(1);
    lower(
        Resource::RLIMIT_AS,
        u64::from(limits.memory_mb) * 1024 * 1024,
        0,
    )?;
    // The soft limit's SIGXCPU ends the worker; the hard one a second later is the backstop.
    lower(Resource::RLIMIT_CPU, cpu, 1)?;
    lower(Resource::RLIMIT_NOFILE, limits.open_files.into(), 0)
}

/// Sets soft = `soft`, hard = `soft + slack`, unless the current limits are lower already.
fn lower(resource: Resource, soft: u64, slack: u64) -> nix::Result<()> {
    let (cur_soft, cur_hard) = getrlimit(resource)?;
    let hard = soft.saturating_add(slack).min(cur_hard);
    let soft = soft.min(cur_soft).min(hard);
    setrlimit(resource, soft, hard)
}
