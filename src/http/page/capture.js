// The microphone's AudioWorklet: mono float samples at the context's rate in, PCM16 at 24 kHz
// out, posted to the page in 20 ms frames (480 samples) as transferable ArrayBuffers. The
// realtime API takes `audio/pcm` at 24 kHz; browsers that cannot open a 24 kHz context get
// linear resampling here.

const OUT_RATE = 24000;
const FRAME = 480;

class Pcm16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.pos = 0; // where the next output sample falls, in input samples from `prev`
    this.prev = 0; // the last input sample of the previous block
    this.frame = new Int16Array(FRAME);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (!channel) return true;
    // Positions count from `prev`: sample j of this block is at position j + 1, so an output
    // at position p lies between input samples floor(p) - 1 and floor(p).
    while (this.pos < channel.length) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : channel[i - 1];
      const b = channel[i];
      this.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= channel.length;
    this.prev = channel[channel.length - 1];
    return true;
  }

  push(sample) {
    const clamped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
    if (this.filled === FRAME) {
      this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
      this.frame = new Int16Array(FRAME);
      this.filled = 0;
    }
  }
}

registerProcessor('pcm16-capture', Pcm16Capture);
