//! Memory handed back to the system between passes.
//!
//! A pass decodes the annuaire answer, the desired state, the state in force and the plans: tens
//! of megabytes for a few thousand hosts, freed at the end of the pass. glibc keeps freed memory
//! in its arenas for the next allocation, so the daemon's resident size stayed at its largest
//! pass (58 MiB at 1,000 AMCs / 4,000 hosts, where 20 MiB are live between passes). After each
//! pass the daemon asks glibc to give the free pages back (`malloc_trim(3)`).

/// Returns the free pages of every malloc arena to the system. Nothing on other C libraries.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    sys::trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod sys {
    pub fn trim() {
        // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
        // pointer and any pad value is valid.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}
