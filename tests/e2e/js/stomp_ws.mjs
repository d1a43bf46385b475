// Sends and receives over STOMP-over-WebSocket with @stomp/stompjs (as a browser page would),
// against the URL, login and passcode given as arguments. Prints one JSON line: what it saw.
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const [url, login, passcode, count] = process.argv.slice(2);
const expected = Number(count || 5);
const received = [];
const timeout = setTimeout(() => finish('timeout'), 15000);

const client = new Client({
  brokerURL: url,
  connectHeaders: { login, passcode },
  webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
  reconnectDelay: 0,
  heartbeatIncoming: 0,
  heartbeatOutgoing: 0,
});

function finish(outcome, extra = {}) {
  clearTimeout(timeout);
  console.log(JSON.stringify({ outcome, received, ...extra }));
  client.deactivate().finally(() => process.exit(0));
}

client.onConnect = (frame) => {
  const version = frame.headers.version;
  client.subscribe('/queue/browser', (message) => {
    received.push({ body: message.body, id: message.headers['message-id'] });
    message.ack();
    if (received.length === expected) finish('ok', { version });
  }, { ack: 'client-individual' });
  for (let i = 0; i < expected; i++) {
    client.publish({ destination: '/queue/browser', body: `from the browser ${i}`, headers: { receipt: `r${i}` } });
  }
};
client.onStompError = (frame) => finish('stomp-error', { message: frame.headers.message });
client.onWebSocketError = () => finish('websocket-error');
client.onWebSocketClose = (event) => { if (received.length < expected) finish('closed', { code: event.code }); };
client.activate();
