// The event stream: one server-side queue per tab, read over WebSocket or long-polling.
//
// The queue, not the connection, owns the events: after a drop the client resumes the same
// queue (queue_id + epoch + last_event_id) and gets every later event exactly once, on either
// transport. When the server cannot resume it (the hello says resumed: false) the app re-reads
// its state over REST. The socket acknowledges every ACK_INTERVAL_MS or ACK_EVERY_EVENTS; a
// long-poll acknowledges with the last_event_id of the next poll.

const ACK_INTERVAL_MS = 2000;
const ACK_EVERY_EVENTS = 100;
const HELLO_TIMEOUT_MS = 5000; // a socket that has not said hello by then is not going to
const SOCKET_FAILURES_BEFORE_FALLBACK = 2; // consecutive sockets that never reached hello
const POLL_TIMEOUT_SECS = 25; // the server's heartbeat: an empty answer after this long
const POLL_SLACK_MS = 10000; // how late a poll may answer before it counts as lost
const SOCKET_RETRY_MS = 60000; // on automatic long-polling, try the socket again this often
// ...but soon after an outage: the sockets failed because the server was away (a restart),
// not because something between us forbids them.
const SOCKET_RETRY_AFTER_OUTAGE_MS = 2000;
const BACKOFF_FIRST_MS = 300;
const BACKOFF_MAX_MS = 10000;
const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_SUSPENDED = 4403; // the account was suspended (session.ended says so first)
// A socket can die without a close (sleep, a NAT forgetting it): after this long without a
// frame the client asks the server something small, and reconnects if no answer comes.
const IDLE_PROBE_MS = 30000;
const PROBE_ANSWER_MS = 10000;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Exponential backoff with jitter, so that a restarted server is not hit by every tab at once. */
function backoff(failures) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, failures - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export class Realtime {
  /**
   * @param {object} options
   * @param {import('./api.js').Api} options.api
   * @param {boolean} options.forceLongPoll  ?transport=longpoll
   * @param {(hello: object, resumed: boolean) => void} options.onHello  resumed=false: re-read state
   * @param {(event: object) => void} options.onEvent  each event once, in order
   * @param {(state: {mode: string, status: string}) => void} options.onStatus
   * @param {(reason: string | null) => void} options.onSessionEnded  token revoked or session.ended (its reason)
   */
  constructor({ api, forceLongPoll = false, onHello, onEvent, onStatus, onSessionEnded }) {
    this.api = api;
    this.forceLongPoll = forceLongPoll;
    this.onHello = onHello;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onSessionEnded = onSessionEnded;
    this.mode = forceLongPoll ? 'longpoll' : 'websocket';
    this.status = 'connecting';
    this.queueId = null;
    this.epoch = null;
    this.lastEventId = 0; // the last event handed to onEvent
    this.ackedId = 0; // the last id the server was told about
    this.socket = null;
    this.pollAbort = null;
    this.socketFailures = 0;
    this.failures = 0; // consecutive failed connects or polls, for the backoff
    this.generation = 0; // bumped on every (re)connect: callbacks of older ones do nothing
    this.timers = new Set();
    this.ackTimer = null;
    this.longPollSince = 0;
    this.pollsFailed = false; // a long-poll failed since the last one that worked (an outage)
    this.stopped = true;
    this.onOnline = () => {
      if (this.status === 'reconnecting') this.connect();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.generation += 1;
    window.removeEventListener('online', this.onOnline);
    this.teardown();
  }

  /** Drop the current connection (tests and the network-change handler use it). */
  teardown() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.stopAcks();
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000, 'client closing');
    }
    if (this.pollAbort) {
      this.pollAbort.abort();
      this.pollAbort = null;
    }
  }

  connect() {
    if (this.stopped) return;
    this.teardown();
    const generation = ++this.generation;
    if (this.mode === 'websocket') this.openSocket(generation);
    else this.pollLoop(generation);
  }

  later(ms, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }

  setStatus(status) {
    if (status === this.status && this.reportedMode === this.mode) return;
    this.status = status;
    this.reportedMode = this.mode;
    this.onStatus?.({ mode: this.mode, status });
  }

  scheduleReconnect() {
    this.failures += 1;
    this.setStatus('reconnecting');
    this.later(backoff(this.failures), () => this.connect());
  }

  sessionEnded(reason = null) {
    if (this.stopped) return;
    this.stop();
    this.onSessionEnded?.(reason);
  }

  // -- hello and events, shared by both transports ----------------------------------------------

  acceptHello(hello) {
    const resumed = Boolean(hello.resumed) && hello.queue_id === this.queueId;
    this.queueId = hello.queue_id;
    this.epoch = hello.epoch;
    if (!resumed) {
      this.lastEventId = hello.last_event_id || 0;
      this.ackedId = this.lastEventId;
    }
    this.onHello?.(hello, resumed);
  }

  deliver(id, event) {
    if (id <= this.lastEventId) return; // already handled: sent again after a reconnect
    this.lastEventId = id;
    if (event.type === 'session.ended') {
      this.sessionEnded(event.reason ?? null);
      return;
    }
    try {
      this.onEvent?.(event);
    } catch (err) {
      console.error('event handler failed', event, err);
    }
    if (this.lastEventId - this.ackedId >= ACK_EVERY_EVENTS) this.sendAck();
  }

  // -- WebSocket ------------------------------------------------------------------------------

  authFrame() {
    const frame = { type: 'auth', token: this.api.token };
    if (this.queueId) {
      frame.queue_id = this.queueId;
      frame.epoch = this.epoch;
      frame.last_event_id = this.lastEventId;
    }
    return frame;
  }

  openSocket(generation) {
    const probing = this.mode === 'websocket' && this.probing;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws`);
    } catch {
      this.socketFailed(generation, probing);
      return;
    }
    this.socket = socket;
    let greeted = false;
    const helloTimer = setTimeout(() => {
      if (!greeted) socket.close();
    }, HELLO_TIMEOUT_MS);
    socket.addEventListener('open', () => {
      if (generation !== this.generation) return;
      socket.send(JSON.stringify(this.authFrame()));
    });
    socket.addEventListener('message', (message) => {
      if (generation !== this.generation) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      if (frame.type === 'hello') {
        greeted = true;
        clearTimeout(helloTimer);
        this.probing = false;
        this.socketFailures = 0;
        this.failures = 0;
        this.acceptHello(frame);
        this.setStatus('live');
        this.startAcks();
      } else if (frame.type === 'event') {
        this.deliver(frame.id, frame.event);
      }
    });
    socket.addEventListener('close', (close) => {
      clearTimeout(helloTimer);
      if (generation !== this.generation || this.stopped) return;
      this.socket = null;
      this.stopAcks();
      if (close.code === CLOSE_UNAUTHORIZED || close.code === CLOSE_SUSPENDED) {
        this.sessionEnded(close.code === CLOSE_SUSPENDED ? 'suspended' : null);
        return;
      }
      if (greeted) {
        this.scheduleReconnect(); // a drop: resume the same queue
        return;
      }
      this.socketFailed(generation, probing);
    });
  }

  socketFailed(generation, probing) {
    if (generation !== this.generation) return;
    if (probing) {
      // The socket still does not work: back to long-polling, no harm done.
      this.probing = false;
      this.mode = 'longpoll';
      this.connect();
      return;
    }
    this.socketFailures += 1;
    if (this.socketFailures >= SOCKET_FAILURES_BEFORE_FALLBACK) {
      this.mode = 'longpoll';
      this.longPollSince = Date.now();
      this.connect();
      return;
    }
    this.scheduleReconnect();
  }

  startAcks() {
    this.stopAcks();
    this.lastFrameAt = Date.now();
    this.probeSentAt = 0;
    this.ackTimer = setInterval(() => {
      this.sendAck();
      this.checkAlive();
    }, ACK_INTERVAL_MS);
  }

  checkAlive() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    const now = Date.now();
    if (this.probeSentAt > this.lastFrameAt) {
      if (now - this.probeSentAt > PROBE_ANSWER_MS) {
        // No answer: the connection is dead even if the browser has not noticed. Do not wait
        // for a close handshake that will never finish.
        this.socket = null;
        this.stopAcks();
        socket.close();
        this.generation += 1;
        this.scheduleReconnect();
      }
    } else if (now - this.lastFrameAt > IDLE_PROBE_MS) {
      this.probeSentAt = now;
      socket.send(JSON.stringify({ type: 'me', ref: 'alive' })); // any command gets a reply
    }
  }

  stopAcks() {
    if (this.ackTimer) clearInterval(this.ackTimer);
    this.ackTimer = null;
  }

  sendAck() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN || this.lastEventId <= this.ackedId) return;
    socket.send(JSON.stringify({ type: 'ack', last_event_id: this.lastEventId }));
    this.ackedId = this.lastEventId;
  }

  // -- long-polling ---------------------------------------------------------------------------

  async pollLoop(generation) {
    while (generation === this.generation && !this.stopped) {
      const controller = new AbortController();
      this.pollAbort = controller;
      // After a failure, a poll that answers at once: the first answer says we are back
      // (a held one would say so only with the next event or the heartbeat).
      const query = { last_event_id: this.lastEventId, timeout: this.failures ? 0 : POLL_TIMEOUT_SECS };
      if (this.queueId) {
        query.queue_id = this.queueId;
        query.epoch = this.epoch;
      }
      let reply;
      try {
        reply = await this.api.get('/api/events', query, {
          signal: controller.signal,
          timeoutMs: POLL_TIMEOUT_SECS * 1000 + POLL_SLACK_MS,
        });
      } catch (err) {
        if (generation !== this.generation || this.stopped) return;
        if (err.status === 401) {
          this.sessionEnded();
          return;
        }
        this.failures += 1;
        this.pollsFailed = true;
        this.setStatus('reconnecting');
        await sleep(backoff(this.failures));
        continue;
      }
      if (generation !== this.generation || this.stopped) return;
      this.failures = 0;
      if (this.pollsFailed && !this.forceLongPoll) {
        // Polls failed too: the server was down, so the sockets may well work again now.
        this.pollsFailed = false;
        this.later(SOCKET_RETRY_AFTER_OUTAGE_MS, () => {
          if (generation === this.generation && this.mode === 'longpoll') this.probeSocket();
        });
      }
      this.ackedId = this.lastEventId;
      for (const item of reply.events || []) {
        if (item.event && item.event.type === 'hello') this.acceptHello(item.event);
        else this.deliver(item.id, item.event);
        if (generation !== this.generation || this.stopped) return;
      }
      this.setStatus('live');
      if (!this.forceLongPoll && Date.now() - this.longPollSince > SOCKET_RETRY_MS) {
        this.probeSocket();
        return;
      }
    }
  }

  /** Perhaps the network changed: try the socket again, resuming the same queue. */
  probeSocket() {
    this.longPollSince = Date.now();
    this.probing = true;
    this.mode = 'websocket';
    this.connect();
  }
}
