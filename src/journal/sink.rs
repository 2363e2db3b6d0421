//! Where the journal's lines go: the file or standard output that
//! `--journal` names.

use std::io::{self, Write};

use super::JournalTarget;

/// Opens `target` for the journal's lines.
///
/// A file is opened for appending (created if need be). Standard output
/// is duplicated, so the journal writes straight to its descriptor past
/// std's line buffer; when it is a pipe or a socket it is made
/// non-blocking, so a reader that stops reading costs the journal's lines
/// (held, then lost past [`MAX_JOURNAL_BUFFER`](super::MAX_JOURNAL_BUFFER)), never the loop. A
/// terminal stays blocking: its mode is shared with the shell.
///
/// # Errors
///
/// What the operating system said.
pub(crate) fn open(target: &JournalTarget) -> io::Result<Box<dyn Write + Send>> {
    match target {
        JournalTarget::File(path) => {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)?;
            Ok(Box::new(file))
        }
        JournalTarget::Stdout => stdout(),
    }
}

/// A duplicate of standard output's descriptor, non-blocking when it is a
/// pipe or a socket.
#[cfg(unix)]
fn stdout() -> io::Result<Box<dyn Write + Send>> {
    use std::io::IsTerminal;
    use std::os::fd::AsFd;
    let file = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    if !file.is_terminal() && !file.metadata()?.is_file() {
        set_nonblocking(&file)?;
    }
    Ok(Box::new(file))
}

/// Standard output as std offers it.
#[cfg(not(unix))]
fn stdout() -> io::Result<Box<dyn Write + Send>> {
    Ok(Box::new(std::io::stdout()))
}

/// Sets `O_NONBLOCK` on `file`'s open file description.
#[cfg(unix)]
fn set_nonblocking(file: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl with F_GETFL/F_SETFL takes no pointers; `fd` is open
    // for as long as `file` is borrowed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
