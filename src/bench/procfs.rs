//! Where the CPU went during a run, and how long threads waited for a core: read from
//! `/proc` at the two ends of a measured window. Also this process's resident memory.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// CPU used during a run, in cores (CPU seconds per second of wall time), read from
/// `/proc` at the two ends of the run's measured window.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// This process: the server (the bench's own threads idle while a run lasts).
    pub server: f64,
    pub redis: f64,
    /// The `oha` processes together.
    pub generators: f64,
    /// Every process on the machine (`/proc/stat`), out of `cores`.
    pub machine: f64,
    pub cores: usize,
    /// Steal: cores this virtual machine wanted but its host gave to something else
    /// (`/proc/stat`; 0 on bare metal).
    pub stolen: f64,
    /// Time the same threads spent runnable but waiting for a core, in seconds per second
    /// of the run (`/proc/<pid>/task/*/schedstat`; `None` where the kernel keeps no
    /// scheduler statistics).
    pub waiting: Option<Waiting>,
}

/// Run-queue wait of the server's, redis-server's and the generators' threads, each in
/// seconds per second of the run: time threads that could run spent waiting for a core
/// (on a virtual machine, also for an idle virtual CPU to be woken). Summed over the
/// threads, so not all of it lies on any one request's path.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Waiting {
    pub server: f64,
    pub redis: f64,
    pub generators: f64,
}

/// CPU seconds so far of this process, redis-server, the load generators and the whole
/// machine.
pub(super) struct CpuSample {
    at: Instant,
    own: f64,
    generators: f64,
    redis: f64,
    machine: f64,
    stolen: f64,
    /// Run-queue wait so far by thread, seconds: this process, redis, the generators.
    waited: Option<[HashMap<u32, f64>; 3]>,
}

/// The CPU split of a run as printed after its latencies.
/// `rps`: the run's throughput, to put the run-queue wait per request.
pub(super) fn cpu_line(cpu: Option<&CpuUse>, rps: f64) -> String {
    cpu.map_or_else(String::new, |c| {
        let waiting = c.waiting.map_or_else(String::new, |w| {
            let per_request = |s: f64| s / rps * 1e6;
            format!(
                "\n           waiting for a core, per request: server {:.0} µs, redis {:.0} µs, \
                 oha {:.0} µs",
                per_request(w.server),
                per_request(w.redis),
                per_request(w.generators)
            )
        });
        format!(
            "\n           cores: server {:.2}, redis {:.2}, oha {:.2}; machine {:.2} of {}, \
             stolen by the host {:.2}{waiting}",
            c.server, c.redis, c.generators, c.machine, c.cores, c.stolen
        )
    })
}

/// Seconds each live thread of `pid` has spent runnable but not running, by thread id,
/// added to `into` (`/proc/<pid>/task/<tid>/schedstat`: on-CPU ns, run-queue ns, slices).
/// A thread that ends while it is read is left out.
fn proc_run_queue_waits(pid: &str, into: &mut HashMap<u32, f64>) -> Option<()> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let task = task.ok()?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        into.insert(
            tid,
            stat.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1e9,
        );
    }
    Some(())
}

/// Run-queue wait between two readings of the same threads: each thread's growth, a
/// thread born since counted whole. A thread that ended in between is left out (its
/// wait is lost, never subtracted), as sums over whatever threads live would not.
fn waited_since(before: &HashMap<u32, f64>, now: &HashMap<u32, f64>) -> f64 {
    now.iter()
        .map(|(tid, w)| w - before.get(tid).copied().unwrap_or(0.0))
        .sum()
}

/// Clock ticks of `/proc`: `USER_HZ`, 100 on Linux whatever the kernel's own tick.
const USER_HZ: f64 = 100.0;

/// `utime + stime` of `pid` in seconds, from `/proc/<pid>/stat`.
fn proc_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // the first is field 3 (state), so utime (14) is at 11.
    let fields: Vec<f64> = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime] = fields[..] else {
        return None;
    };
    Some((utime + stime) / USER_HZ)
}

impl CpuSample {
    /// `generators`: the load generators' pids, read while they run (after the load,
    /// oha goes on to write its request log, which is not the run's CPU).
    pub(super) fn take(redis_pid: u32, generators: &[u32]) -> Option<Self> {
        let own = proc_cpu("self")?;
        let redis = proc_cpu(&redis_pid.to_string())?;
        let generators_cpu = generators
            .iter()
            .map(|pid| proc_cpu(&pid.to_string()))
            .sum::<Option<f64>>()?;
        let waited = (|| {
            let mut by_thread: [HashMap<u32, f64>; 3] = Default::default();
            proc_run_queue_waits("self", &mut by_thread[0])?;
            proc_run_queue_waits(&redis_pid.to_string(), &mut by_thread[1])?;
            for pid in generators {
                proc_run_queue_waits(&pid.to_string(), &mut by_thread[2])?;
            }
            Some(by_thread)
        })();
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal ...: busy is all but idle,
        // iowait and steal.
        let ticks: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .filter_map(|t| t.parse().ok())
            .collect();
        let machine = ticks
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 4, 7].contains(i))
            .map(|(_, t)| t)
            .sum::<f64>()
            / USER_HZ;
        let stolen = ticks.get(7).copied().unwrap_or(0.0) / USER_HZ;
        Some(Self {
            at: Instant::now(),
            own,
            generators: generators_cpu,
            redis,
            machine,
            stolen,
            waited,
        })
    }

    /// Cores used since `self`, with `generators` as [`CpuSample::take`] has them.
    pub(super) fn cores_since(&self, redis_pid: u32, generators: &[u32]) -> Option<CpuUse> {
        let now = Self::take(redis_pid, generators)?;
        let secs = now.at.duration_since(self.at).as_secs_f64();
        Some(CpuUse {
            server: (now.own - self.own) / secs,
            redis: (now.redis - self.redis) / secs,
            generators: (now.generators - self.generators) / secs,
            machine: (now.machine - self.machine) / secs,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            stolen: (now.stolen - self.stolen) / secs,
            waiting: self
                .waited
                .as_ref()
                .zip(now.waited.as_ref())
                .map(|(a, b)| Waiting {
                    server: waited_since(&a[0], &b[0]) / secs,
                    redis: waited_since(&a[1], &b[1]) / secs,
                    generators: waited_since(&a[2], &b[2]) / secs,
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_use_counts_this_process_and_the_generators_it_names() {
        use std::io::BufRead;
        let me = std::process::id();
        let before = CpuSample::take(me, &[]).expect("/proc is readable");
        let thread_before = proc_cpu("thread-self").unwrap();
        // Burn about 0.3 s of CPU on this thread...
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let thread_after = proc_cpu("thread-self").unwrap();
        // ...and in a child that then stays alive, as a generator is when it is read.
        let child_started = Instant::now();
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo burnt; exec sleep 30",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "burnt");
        let child_wall = child_started.elapsed().as_secs_f64();
        let cpu = before.cores_since(me, &[child.id()]).unwrap();
        let secs = started.elapsed().as_secs_f64();
        let gone = before.cores_since(me, &[u32::MAX]);
        child.kill().unwrap();
        child.wait().unwrap();
        // Other tests' threads may add to the process, never take away; ticks are 10 ms.
        let thread_cores = (thread_after - thread_before) / secs;
        assert!(thread_after > thread_before, "the busy thread used no CPU");
        assert!(
            cpu.server >= thread_cores - 0.05,
            "{cpu:?} < {thread_cores}"
        );
        assert!(
            cpu.generators * secs >= 0.3 * child_wall,
            "{cpu:?}: the CPU-bound child ran {child_wall:.2} s"
        );
        // The same process read as "redis" a moment after "self".
        assert!((cpu.server - cpu.redis).abs() < 0.15, "{cpu:?}");
        assert!(cpu.machine >= cpu.server - 0.05, "{cpu:?}");
        assert!(
            cpu.stolen >= 0.0 && cpu.stolen <= cpu.cores as f64 + 0.05,
            "{cpu:?}"
        );
        // Waiting for a core is read for the same processes.
        assert!(cpu.waiting.is_some(), "schedstat is readable");
        let mut threads = HashMap::new();
        assert!(proc_run_queue_waits("self", &mut threads).is_some());
        let me_thread: u32 = std::fs::read_link("/proc/thread-self")
            .unwrap()
            .file_name()
            .and_then(|t| t.to_str()?.parse().ok())
            .unwrap();
        assert!(
            threads.contains_key(&me_thread),
            "{threads:?} lacks {me_thread}"
        );
        assert!(proc_run_queue_waits("not-a-pid", &mut threads).is_none());
        // A generator that cannot be read leaves the split unknown rather than short.
        assert!(gone.is_none());
        assert!(proc_cpu("not-a-pid").is_none());
    }

    #[test]
    fn run_queue_wait_counts_each_threads_growth_and_never_an_ended_thread_against_it() {
        let before = HashMap::from([(1, 0.5), (2, 9.0)]);
        // Thread 1 waited 0.25 s more, thread 2 ended, thread 3 started and waited 0.1 s.
        let now = HashMap::from([(1, 0.75), (3, 0.1)]);
        assert!((waited_since(&before, &now) - 0.35).abs() < 1e-12);
        assert_eq!(waited_since(&before, &HashMap::new()), 0.0);
    }

    #[test]
    fn waiting_for_a_core_counts_threads_that_outnumber_the_cores() {
        let me = std::process::id();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let before = CpuSample::take(me, &[]).unwrap();
        let started = Instant::now();
        // One CPU-bound thread more than there are cores, for 0.3 s: together they wait
        // about 0.3 s for a core, whatever else the machine runs.
        let burners: Vec<_> = (0..=cores)
            .map(|_| {
                std::thread::spawn(|| {
                    let started = Instant::now();
                    let mut x = 0u64;
                    while started.elapsed() < Duration::from_millis(300) {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005) + 1);
                    }
                    // Read while the thread lives: an exited thread leaves /proc.
                    std::thread::sleep(Duration::from_millis(200));
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(350));
        let cpu = before.cores_since(me, &[]).unwrap();
        let secs = started.elapsed().as_secs_f64();
        for b in burners {
            b.join().unwrap();
        }
        let waited = cpu.waiting.unwrap().server * secs;
        assert!(waited >= 0.05, "{cpu:?}: {waited:.3} s waited");
    }
}
