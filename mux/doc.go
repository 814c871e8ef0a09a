// Package mux is the protocol between the daemon and the in-sprite agent:
// a handshake that proves the deployment secret, then yamux streams that
// each carry a framed, resumable TCP connection. Both ends keep what they
// sent until the other acknowledges it, so a stream can move to a new link
// after a drop with nothing lost and nothing duplicated, and an abnormal
// end is a reset frame, never a clean-looking EOF.
package mux
