//! A small fork-join pool whose caller takes part and whose idle workers spin a while
//! before they sleep, so that a parallel region costs a few microseconds instead of the
//! futex round trips of handing a job to a sleeping pool and sleeping until it is done
//! (rayon's `install`: 57-77 us per call on the project's 2-core VM).
//!
//! A panic in a task ends its thread's share of the region (tasks it had claimed are not
//! run) and is resumed in the owner once no thread runs the job any more.
//!
//! A region is `tasks` task indices and a job that claims them one by one until none is
//! left. Its owner (the thread that starts it) publishes it, runs the job itself, then waits
//! until every thread that entered the job has left it. Idle workers run the job of the
//! latest region with unclaimed tasks, so a region started inside another region's task
//! (nested) is shared out too. Which thread runs which task never changes a result: every
//! task computes its own outputs.

use std::any::Any;
use std::cell::Cell;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long an idle worker spins for a new region before it sleeps.
const SPIN: Duration = Duration::from_micros(200);

/// The claims on a region's tasks that a job makes on one thread: runs of consecutive
/// tasks, each a share of what is left (as OpenMP's guided schedule), so that many small
/// tasks cost a few claims and the last claims are single tasks that even out the threads.
pub(crate) struct Claims<'a> {
    next: &'a AtomicUsize,
    tasks: usize,
    /// Threads that may claim.
    threads: usize,
    /// The rest of this thread's run.
    run: Cell<Range<usize>>,
}

impl<'a> Claims<'a> {
    fn new(next: &'a AtomicUsize, tasks: usize, threads: usize) -> Self {
        Claims {
            next,
            tasks,
            threads,
            run: Cell::new(0..0),
        }
    }

    /// The next task of this thread's run, or of a new run; `None` once all are claimed.
    pub(crate) fn next(&self) -> Option<usize> {
        let mut run = self.run.take();
        if run.is_empty() {
            // SeqCst: see `Region`.
            let mut first = self.next.load(Ordering::SeqCst);
            loop {
                if first >= self.tasks {
                    return None;
                }
                let share = ((self.tasks - first) / (2 * self.threads)).max(1);
                match self.next.compare_exchange_weak(
                    first,
                    first + share,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => break run = first..first + share,
                    Err(now) => first = now,
                }
            }
        }
        let task = run.next();
        self.run.set(run);
        task
    }
}

/// A job: claims tasks and runs them until none is left.
pub(crate) type Job<'a> = dyn Fn(&Claims<'_>) + Sync + 'a;

/// A published region. `job` borrows the owner's stack: it is called only by a thread
/// that has entered (`active` counts it) while a task is still unclaimed, and the owner
/// returns only once every task is claimed and no thread is inside. A worker increments
/// `active` before it checks `next` and the owner checks `active` after its last claim,
/// all sequentially consistent, so a worker that enters after the owner's last check sees
/// every task claimed and leaves without calling `job`.
struct Region {
    /// Its publication's number: regions published later (one a task of this region
    /// started, say) have higher ones.
    seq: usize,
    job: *const Job<'static>,
    next: AtomicUsize,
    tasks: usize,
    threads: usize,
    active: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is `Sync` and is called only under the protocol above, while its owner
// waits; the other fields are thread-safe.
#[allow(unsafe_code)]
unsafe impl Send for Region {}
// SAFETY: as above.
#[allow(unsafe_code)]
unsafe impl Sync for Region {}

impl Region {
    fn has_tasks(&self) -> bool {
        self.next.load(Ordering::SeqCst) < self.tasks
    }

    /// Runs the job on this thread if a task is left, recording a panic.
    fn help(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.has_tasks() {
            // SAFETY: this thread has entered (`active`) while a task is unclaimed, so the
            // owner is still waiting and `job` still borrows live data (see `Region`).
            #[allow(unsafe_code)]
            let job = unsafe { &*self.job };
            let claims = Claims::new(&self.next, self.tasks, self.threads);
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| job(&claims))) {
                lock(&self.panic).get_or_insert(payload);
            }
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the owners and the workers of a pool share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when a region is published or the pool shuts down.
    published: Condvar,
    /// Bumped on every publication, read by spinning workers without the lock.
    generation: AtomicUsize,
    shutdown: AtomicBool,
    /// Threads a region runs on, its owner included.
    threads: usize,
}

impl Shared {
    /// The latest region published after number `after` with a task left, if any.
    fn latest_with_tasks(&self, after: usize) -> Option<Arc<Region>> {
        let state = lock(&self.state);
        let mut regions = state.regions.iter().rev();
        regions.find(|r| r.seq > after && r.has_tasks()).cloned()
    }
}

struct State {
    regions: Vec<Arc<Region>>,
    sleepers: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a job is caught before it could poison a lock held around it; none is.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A handle on a pool of `threads - 1` workers; the thread that starts a region is the
/// other one. The workers run until [`Pool::shut_down`].
#[derive(Clone)]
pub(crate) struct Pool(Arc<Shared>);

impl Pool {
    /// A pool for `threads` threads in all; `None` if a worker cannot be spawned (those
    /// spawned are shut down).
    pub(crate) fn new(threads: usize) -> Option<Pool> {
        let pool = Pool(Arc::new(Shared {
            state: Mutex::new(State {
                regions: Vec::new(),
                sleepers: 0,
            }),
            published: Condvar::new(),
            generation: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            threads,
        }));
        for i in 1..threads {
            let worker = pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("conv2d-{i}"))
                .spawn(move || super::as_worker(worker.clone(), || work(&worker.0)));
            if spawned.is_err() {
                pool.shut_down();
                return None;
            }
        }
        Some(pool)
    }

    /// The threads a region runs on, its caller included.
    pub(crate) fn threads(&self) -> usize {
        self.0.threads
    }

    /// Lets the workers exit once idle (a region still running is finished by its owner).
    pub(crate) fn shut_down(&self) {
        let _state = lock(&self.0.state);
        self.0.shutdown.store(true, Ordering::SeqCst);
        self.0.generation.fetch_add(1, Ordering::SeqCst);
        self.0.published.notify_all();
    }

    /// Runs `job` on this thread and on idle workers until all `tasks` are claimed and
    /// done; a panic in any of them is resumed here once no thread runs the job any more.
    pub(crate) fn run(&self, tasks: usize, job: &Job<'_>) {
        let next = AtomicUsize::new(0);
        if tasks <= 1 || self.0.threads == 1 {
            return job(&Claims::new(&next, tasks, 1));
        }
        // SAFETY: only the lifetime is erased; `job` is called under `Region`'s protocol,
        // and this function returns (or unwinds) only after waiting for it below.
        #[allow(unsafe_code)]
        let erased: *const Job<'static> = unsafe { std::mem::transmute(job as *const Job<'_>) };
        let mut state = lock(&self.0.state);
        let seq = self.0.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let region = Arc::new(Region {
            seq,
            job: erased,
            next,
            tasks,
            threads: self.0.threads,
            active: AtomicUsize::new(0),
            panic: Mutex::new(None),
        });
        state.regions.push(Arc::clone(&region));
        if state.sleepers > 0 {
            self.0.published.notify_all();
        }
        drop(state);
        region.help();
        lock(&self.0.state)
            .regions
            .retain(|r| !Arc::ptr_eq(r, &region));
        // Every task is claimed (this thread's job ran until none was left); wait for the
        // threads still inside the job, helping with regions published after this one (one
        // that a task of this region started, say), never an earlier one: its task could
        // outlast this region and would hold its own buffers on top of this one's.
        let mut seen = None;
        let mut spins = 0u32;
        while region.active.load(Ordering::SeqCst) > 0 {
            let generation = self.0.generation.load(Ordering::SeqCst);
            if seen != Some(generation) {
                seen = Some(generation);
                if let Some(other) = self.0.latest_with_tasks(region.seq) {
                    other.help();
                    seen = None;
                    continue;
                }
            }
            spins = spins.saturating_add(1);
            match spins < 1 << 12 {
                true => std::hint::spin_loop(),
                false => std::thread::yield_now(),
            }
        }
        let panic = lock(&region.panic).take();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
    }
}

/// A worker: helps the latest region with unclaimed tasks; when there is none, spins for
/// [`SPIN`] on the publication counter, then sleeps until a publication.
fn work(shared: &Shared) {
    loop {
        let generation = shared.generation.load(Ordering::SeqCst);
        if let Some(region) = shared.latest_with_tasks(0) {
            region.help();
            continue;
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while shared.generation.load(Ordering::SeqCst) == generation {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                let mut state = lock(&shared.state);
                state.sleepers += 1;
                while shared.generation.load(Ordering::SeqCst) == generation {
                    state = shared
                        .published
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                state.sleepers -= 1;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(n: usize) -> Vec<AtomicUsize> {
        (0..n).map(|_| AtomicUsize::new(0)).collect()
    }

    /// Runs a region's tasks, each once, on a pool of `threads`.
    fn run_all(pool: &Pool, runs: &[AtomicUsize]) {
        pool.run(runs.len(), &|claims: &Claims<'_>| {
            while let Some(i) = claims.next() {
                runs[i].fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    #[test]
    fn every_task_runs_once() {
        for threads in [1, 2, 3, 5] {
            let pool = Pool::new(threads).expect("a pool");
            for tasks in [0, 1, 2, 7, 64, 1000] {
                let runs = counts(tasks);
                run_all(&pool, &runs);
                assert!(
                    runs.iter().all(|r| r.load(Ordering::Relaxed) == 1),
                    "{threads} threads, {tasks} tasks"
                );
            }
            pool.shut_down();
        }
    }

    #[test]
    fn regions_started_inside_tasks_complete() {
        let pool = Pool::new(3).expect("a pool");
        let inner = counts(5 * 40);
        pool.run(5, &|claims: &Claims<'_>| {
            while let Some(i) = claims.next() {
                run_all(&pool, &inner[i * 40..][..40]);
            }
        });
        assert!(inner.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        pool.shut_down();
    }

    #[test]
    fn a_panic_reaches_the_owner_once_the_other_tasks_are_done() {
        let pool = Pool::new(2).expect("a pool");
        let runs = counts(50);
        let result = catch_unwind(AssertUnwindSafe(|| {
            pool.run(runs.len(), &|claims: &Claims<'_>| {
                while let Some(i) = claims.next() {
                    if i == 17 {
                        panic!("task 17");
                    }
                    std::thread::sleep(Duration::from_micros(50));
                    runs[i].fetch_add(1, Ordering::Relaxed);
                }
            });
        }));
        let payload = result.expect_err("the panic is resumed");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"task 17"));
        // The thread whose task panicked left its run; every other claimed task finished
        // before `run` returned, and none ran twice.
        assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) <= 1));
        assert_eq!(runs[17].load(Ordering::Relaxed), 0);
        // The pool still runs regions.
        let again = counts(30);
        run_all(&pool, &again);
        assert!(again.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        pool.shut_down();
    }
}
