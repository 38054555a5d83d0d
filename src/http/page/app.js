// voxloop's browser page: a realtime client of /v1/realtime (OpenAI Realtime GA events), plus
// the voice library and audio search. No framework and no build step: the binary serves this
// file as is.
//
// URL parameters preset the session, for links and for tests: `mode=ptt|handsfree`,
// `voice=NAME`, `tool_choice=auto|none|TOOL`, `max_output_tokens=N`, `instructions=TEXT`,
// `connect=1` (connect at once; a browser still needs a click before it plays sound).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const RATE = 24000;

// What tests and curious people can read off the page: counters on <body data-*>.
const stats = { speechStarted: 0, audioChunks: 0, toolCalls: 0, toolResults: 0, responses: 0, errors: 0 };
function count(key) {
  stats[key] += 1;
  document.body.dataset[key] = String(stats[key]);
}

// ---- the event log and the status pill -------------------------------------------------------

function log(text, cls) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  if (cls) li.className = cls;
  const list = $('log');
  list.append(li);
  while (list.children.length > 400) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
}

function status(text, cls = '') {
  const pill = $('status');
  pill.textContent = text;
  pill.className = `pill ${cls}`;
  document.body.dataset.status = text;
}

function notice(html) {
  const box = $('notice');
  box.innerHTML = html;
  box.hidden = !html;
}

// ---- what the service has ------------------------------------------------------------------

let health = null;

async function loadHealth() {
  try {
    health = await (await fetch('/healthz')).json();
  } catch (e) {
    status('service unreachable', 'error');
    notice(`Cannot reach the service: ${escapeHtml(String(e))}`);
    return;
  }
  const missing = [];
  if (!health.agent) {
    missing.push(
      'No speech model is loaded, so there is no one to talk to. Point <code>[model] dir</code> ' +
        'in <code>voxloop.toml</code> (or <code>VOXLOOP_MODEL_DIR</code>) at a Step-Audio 2 ' +
        'checkpoint and restart <code>voxloop serve</code>.',
    );
  } else if (!health.agent.voice) {
    missing.push(
      'Answers come as text only: speech is rendered when <code>&lt;model dir&gt;/token2wav</code> ' +
        'and a voice profile exist (see <code>voxloop voice add</code>).',
    );
  }
  if (health.audio_index_items == null) {
    missing.push('No audio index: build one with <code>voxloop index add &lt;folder&gt;</code>.');
  }
  notice(missing.join('<br>'));
  $('connect').disabled = !health.agent;
  status(health.agent ? 'ready' : 'no model', health.agent ? '' : 'error');
  for (const tool of health.agent ? health.agent.tools : []) {
    $('tool-choice').append(new Option(`only ${tool}`, tool));
  }
  const preset = params.get('tool_choice');
  if (preset) $('tool-choice').value = preset;
}

async function loadVoices() {
  const select = $('voice');
  try {
    const answer = await (await fetch('/v1/voices')).json();
    for (const v of answer.voices) {
      const label = v.description ? `${v.name} — ${v.description}` : v.name;
      select.append(new Option(label, v.name, false, v.name === answer.default));
    }
    if (!answer.voices.length) select.append(new Option('(none)', ''));
    const preset = params.get('voice');
    if (preset) select.value = preset;
  } catch (e) {
    log(`voices: ${e}`, 'error');
  }
  select.disabled = select.options.length < 2;
}

// ---- audio out: scheduled PCM16 chunks, stoppable at once ---------------------------------------

let ctx = null;
const playback = { sources: [], chunks: [], item: null, playhead: 0 };

function playChunk(itemId, base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  if (!pcm.length) return;
  const buffer = ctx.createBuffer(1, pcm.length, RATE);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  const start = Math.max(ctx.currentTime + 0.02, playback.playhead);
  source.start(start);
  playback.playhead = start + buffer.duration;
  if (playback.item !== itemId) {
    playback.item = itemId;
    playback.chunks = [];
  }
  playback.chunks.push({ start, duration: buffer.duration });
  playback.sources.push(source);
  source.onended = () => {
    playback.sources = playback.sources.filter((s) => s !== source);
    if (!playback.sources.length && socket) status('live', 'live');
  };
  status('speaking', 'speaking');
}

// Milliseconds of the current item's audio the user has heard so far.
function heardMs() {
  const now = ctx ? ctx.currentTime : 0;
  let heard = 0;
  for (const c of playback.chunks) heard += Math.min(Math.max(now - c.start, 0), c.duration);
  return Math.round(heard * 1000);
}

// Stops playback; when something was cut short, tells the server how much was heard, so the
// model's next turn sees what the user heard (conversation.item.truncate).
function stopPlayback() {
  const playing = playback.sources.length > 0;
  for (const s of playback.sources) {
    s.onended = null;
    s.stop();
  }
  playback.sources = [];
  playback.playhead = 0;
  if (playing && playback.item) {
    send({ type: 'conversation.item.truncate', item_id: playback.item, content_index: 0, audio_end_ms: heardMs() });
    const bubble = bubbles.get(playback.item);
    if (bubble) bubble.classList.add('cut');
  }
  playback.chunks = [];
  playback.item = null;
}

// ---- audio in: the microphone through the capture worklet ---------------------------------------

let mic = null;
let streaming = false; // whether captured frames go to the server now

async function startMicrophone() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  await ctx.audioWorklet.addModule('/page/capture.js');
  const node = new AudioWorkletNode(ctx, 'pcm16-capture');
  ctx.createMediaStreamSource(stream).connect(node);
  node.port.onmessage = (event) => {
    if (streaming) send({ type: 'input_audio_buffer.append', audio: toBase64(event.data) });
  };
  mic = { stream, node };
}

function stopMicrophone() {
  if (!mic) return;
  for (const track of mic.stream.getTracks()) track.stop();
  mic.node.disconnect();
  mic = null;
}

function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

// ---- the realtime connection ------------------------------------------------------------------

let socket = null;
let responding = false;

function send(event) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(event));
}

function mode() {
  return document.querySelector('input[name=mode]:checked').value;
}

function sessionConfig() {
  const session = {
    type: 'realtime',
    output_modalities: ['audio'],
    audio: {
      input: {
        format: { type: 'audio/pcm', rate: RATE },
        turn_detection: mode() === 'handsfree' ? { type: 'server_vad' } : null,
      },
      output: { format: { type: 'audio/pcm', rate: RATE } },
    },
  };
  const voice = $('voice').value;
  if (voice) session.audio.output.voice = voice;
  const choice = $('tool-choice').value;
  session.tool_choice = choice === 'auto' || choice === 'none' ? choice : { type: 'function', name: choice };
  const max = params.get('max_output_tokens');
  if (max) session.max_output_tokens = Number(max);
  const instructions = params.get('instructions');
  if (instructions) session.instructions = instructions;
  return session;
}

async function connect() {
  $('connect').disabled = true;
  status('connecting…');
  ctx = ctx || new AudioContext({ sampleRate: RATE });
  await ctx.resume();
  try {
    await startMicrophone();
  } catch (e) {
    log(`microphone: ${e}`, 'error');
    notice(`No microphone (${escapeHtml(String(e))}): you can still type messages.`);
  }
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/realtime`;
  socket = new WebSocket(url);
  socket.onopen = () => {
    send({ type: 'session.update', session: sessionConfig() });
    setConnected(true);
  };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onerror = () => log('connection error', 'error');
  socket.onclose = (event) => {
    log(`connection closed (${event.code}${event.reason ? `: ${event.reason}` : ''})`, event.code === 1000 ? '' : 'error');
    socket = null;
    setConnected(false);
  };
}

function disconnect() {
  stopPlayback();
  stopMicrophone();
  if (socket) socket.close(1000);
}

function setConnected(on) {
  $('connect').textContent = on ? 'Disconnect' : 'Connect';
  $('connect').disabled = !health || !health.agent;
  for (const el of [$('say-text'), document.querySelector('#say button')]) el.disabled = !on;
  streaming = on && mode() === 'handsfree';
  $('talk').disabled = !on || mode() !== 'ptt' || !mic;
  status(on ? 'live' : health && health.agent ? 'ready' : 'no model', on ? 'live' : '');
}

function onEvent(event) {
  if (event.type !== 'response.output_audio.delta' && event.type !== 'input_audio_buffer.append') {
    log(event.type + (event.error ? `: ${event.error.message}` : ''), event.type === 'error' ? 'error' : '');
  }
  switch (event.type) {
    case 'session.created':
      document.body.dataset.session = event.session.id;
      break;
    case 'input_audio_buffer.speech_started':
      count('speechStarted');
      // Barge-in: the server cancels the answer; the page stops what it is playing.
      stopPlayback();
      userBubble(event.item_id, 'You are speaking…');
      status('listening', 'live');
      break;
    case 'input_audio_buffer.committed':
      userBubble(event.item_id, '(you spoke)');
      break;
    case 'response.created':
      responding = true;
      break;
    case 'response.output_item.added':
      if (event.item.type === 'message') assistantBubble(event.item.id);
      if (event.item.type === 'function_call') toolStarted(event.item);
      break;
    case 'response.output_audio.delta':
      count('audioChunks');
      if (ctx) playChunk(event.item_id, event.delta);
      break;
    case 'response.output_audio_transcript.delta':
    case 'response.output_text.delta':
      assistantBubble(event.item_id).textContent += event.delta;
      break;
    case 'response.function_call_arguments.done':
      toolArguments(event.call_id, event.arguments);
      break;
    case 'conversation.item.added':
      if (event.item.type === 'function_call_output') toolFinished(event.item);
      if (event.item.type === 'mcp_approval_request') toolApproval(event.item);
      if (event.item.type === 'message' && event.item.role === 'user') {
        const text = event.item.content.filter((c) => c.type === 'input_text').map((c) => c.text).join(' ');
        if (text) userBubble(event.item.id, text);
      }
      break;
    case 'response.done':
      responding = false;
      count('responses');
      if (event.response.status !== 'completed') {
        const reason = event.response.status_details && event.response.status_details.reason;
        log(`response ${event.response.status}${reason ? ` (${reason})` : ''}`);
      }
      break;
    case 'error':
      count('errors');
      break;
  }
}

// ---- transcript -------------------------------------------------------------------------------

const bubbles = new Map();

function bubble(id, role) {
  let li = bubbles.get(id);
  if (!li) {
    li = document.createElement('li');
    li.className = role;
    bubbles.set(id, li);
    $('transcript').append(li);
  }
  return li;
}

function userBubble(id, text) {
  bubble(id, 'user').textContent = text;
}

function assistantBubble(id) {
  return bubble(id, 'assistant');
}

// ---- tool timeline ------------------------------------------------------------------------------

const calls = new Map(); // call_id → { li, started }

function toolRow(callId, name) {
  let call = calls.get(callId);
  if (!call) {
    const li = document.createElement('li');
    li.dataset.callId = callId;
    li.innerHTML = '<span class="name"></span><span class="meta">running…</span><pre class="args"></pre><pre class="result" hidden></pre>';
    li.querySelector('.name').textContent = name || '(unnamed call)';
    $('timeline').append(li);
    call = { li, started: performance.now() };
    calls.set(callId, call);
  }
  return call;
}

function toolStarted(item) {
  count('toolCalls');
  toolRow(item.call_id, item.name);
}

function toolArguments(callId, args) {
  const call = calls.get(callId);
  if (call) call.li.querySelector('.args').textContent = pretty(args);
}

function toolFinished(item) {
  count('toolResults');
  const call = toolRow(item.call_id, '(call)');
  const ms = Math.round(performance.now() - call.started);
  const result = call.li.querySelector('.result');
  result.hidden = false;
  result.textContent = pretty(item.output);
  let failure = null;
  try {
    const parsed = JSON.parse(item.output);
    if (parsed && parsed.error && parsed.error.kind) failure = parsed.error.kind;
  } catch (_) {
    // Plain text: a result.
  }
  // Error kinds name the policy decision that stopped a call (denied, timeout, rate_limited, …).
  call.li.querySelector('.meta').textContent = failure ? `${failure} after ${ms} ms` : `${ms} ms`;
  call.li.className = failure ? 'failed' : 'done';
  const decision = call.li.querySelector('.decision');
  if (decision) decision.remove();
}

function toolApproval(item) {
  const call = toolRow(item.approval_request_id, item.name);
  call.li.className = 'waiting';
  call.li.querySelector('.meta').textContent = 'waiting for your approval';
  call.li.querySelector('.args').textContent = pretty(item.arguments);
  const buttons = document.createElement('div');
  buttons.className = 'decision';
  for (const [label, approve] of [['Approve', true], ['Deny', false]]) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = label;
    button.onclick = () => {
      const answer = { type: 'mcp_approval_response', approval_request_id: item.approval_request_id, approve };
      if (!approve) answer.reason = 'denied in the browser';
      send({ type: 'conversation.item.create', item: answer });
      buttons.remove();
      call.li.querySelector('.meta').textContent = approve ? 'approved, running…' : 'denied';
    };
    buttons.append(button);
  }
  call.li.append(buttons);
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 1);
  } catch (_) {
    return text;
  }
}

// ---- audio search -------------------------------------------------------------------------------

async function search(event) {
  event.preventDefault();
  const query = new URLSearchParams({ q: $('search-q').value, k: '8' });
  const kind = $('search-kind').value;
  if (kind) query.set('kind', kind);
  const list = $('search-results');
  list.textContent = '';
  const answer = await fetch(`/v1/audio/search?${query}`);
  const body = await answer.json();
  if (!answer.ok) {
    list.innerHTML = `<li class="why">${escapeHtml(body.error || answer.statusText)}</li>`;
    return;
  }
  if (!body.hits.length) list.innerHTML = '<li class="why">nothing found</li>';
  for (const hit of body.hits) {
    const li = document.createElement('li');
    const text = document.createElement('div');
    const title = document.createElement('div');
    title.textContent = `${hit.item.kind}: ${hit.item.description}`;
    const why = document.createElement('div');
    why.className = 'why';
    why.textContent = `score ${hit.score.toFixed(3)} · ${hit.item.duration_s.toFixed(1)} s`;
    text.append(title, why);
    const audio = document.createElement('audio');
    audio.controls = true;
    audio.preload = 'none';
    audio.src = `/v1/audio/items/${encodeURIComponent(hit.item.id)}/audio`;
    li.append(audio, text);
    list.append(li);
  }
  document.body.dataset.searchHits = String(body.hits.length);
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- wiring -------------------------------------------------------------------------------------

function holdToTalk(down) {
  if (!socket || mode() !== 'ptt' || !mic) return;
  if (down && !streaming) {
    stopPlayback();
    if (responding) send({ type: 'response.cancel' });
    send({ type: 'input_audio_buffer.clear' });
    streaming = true;
    $('talk').classList.add('held');
    status('listening', 'live');
  } else if (!down && streaming) {
    streaming = false;
    $('talk').classList.remove('held');
    send({ type: 'input_audio_buffer.commit' });
    send({ type: 'response.create' });
  }
}

$('connect').onclick = () => (socket ? disconnect() : connect());
$('talk').onpointerdown = () => holdToTalk(true);
$('talk').onpointerup = () => holdToTalk(false);
$('talk').onpointerleave = () => holdToTalk(false);
document.addEventListener('keydown', (e) => {
  if (e.code === 'Space' && !e.repeat && e.target.tagName !== 'INPUT') {
    e.preventDefault();
    holdToTalk(true);
  }
});
document.addEventListener('keyup', (e) => {
  if (e.code === 'Space' && e.target.tagName !== 'INPUT') holdToTalk(false);
});
for (const radio of document.querySelectorAll('input[name=mode]')) {
  radio.onchange = () => {
    if (!socket) return;
    send({ type: 'session.update', session: sessionConfig() });
    setConnected(true);
  };
}
for (const select of [$('voice'), $('tool-choice')]) {
  select.onchange = () => send({ type: 'session.update', session: sessionConfig() });
}
$('say').onsubmit = (event) => {
  event.preventDefault();
  const text = $('say-text').value.trim();
  if (!text) return;
  stopPlayback();
  if (responding) send({ type: 'response.cancel' });
  send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } });
  send({ type: 'response.create' });
  $('say-text').value = '';
};
$('search-form').onsubmit = (event) => search(event).catch((e) => log(`search: ${e}`, 'error'));

if (params.get('mode') === 'ptt') document.querySelector('input[value=ptt]').checked = true;
await Promise.all([loadHealth(), loadVoices()]);
document.body.dataset.ready = '1';
if (params.get('connect') === '1' && health && health.agent) connect();
