//! Serv console (to come with the [console] issue): the web console served at `/console` on the
//! admin address, its assets embedded in the binary, reading and acting only through the
//! versioned admin API (`/v1/...`) and its live (SSE) feeds.
