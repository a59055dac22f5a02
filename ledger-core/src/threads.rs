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
