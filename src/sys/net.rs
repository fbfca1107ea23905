//! UNIX sockets: placeholder until the relay's calls move here.
