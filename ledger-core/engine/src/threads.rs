//! Thread priorities for background work that must never delay the write path.

/// Puts the calling thread under `SCHED_IDLE` (Linux; any thread may lower itself so).
/// Elsewhere, the lowest priority the platform offers.
pub fn lower_current_thread_priority() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
        };
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        set_thread_priority_and_policy(thread_native_id(), thread_priority::ThreadPriority::Min, idle)
            .map_err(|e| format!("{e:?}"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min).map_err(|e| format!("{e:?}"))
    }
}

thread_local! {
    /// The name of this thread if a panic on it must stop the process.
    static CRITICAL: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// Makes a panic on the calling thread stop the whole process, before unwinding drops
/// anything. For the threads whose death would leave a server answering without them:
/// the ledger writer and the store's committer. A panic there is a broken invariant
/// (the double-entry assertion, a decided transfer naming a missing account), and
/// unwinding would first drop the thread's channels, so its callers would see an
/// ordinary "shut down" error and carry on. Release builds abort on every panic
/// (`panic = "abort"`); this makes these threads' case hold in every build.
pub fn abort_on_panic(thread: &'static str) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if let Some(thread) = CRITICAL.with(std::cell::Cell::get) {
                eprintln!("fatal: the {thread} thread panicked; the process stops");
                std::process::abort();
            }
        }));
    });
    CRITICAL.with(|critical| critical.set(Some(thread)));
}
