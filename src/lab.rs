//! The test lab: real rsync --daemon upstream and OpenSSH sshd mirrors on loopback.
