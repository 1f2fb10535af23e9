// Turning proto3 JSON values into text for people. In the proto3 JSON mapping 64-bit integers
// are strings, bytes are base64, and fields at their default (0, false, empty) are left out,
// so every reader here supplies the default.

/** A uint64/int64/uint32 field as a Number (0 when absent). Offsets stay below 2^53. */
export function num(value) {
  return Number(value ?? 0);
}

export function base64ToBytes(value) {
  if (value === undefined || value === null) return null;
  const binary = atob(value);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

const decoder = new TextDecoder('utf-8');

export function bytesToText(bytes) {
  return bytes === null ? null : decoder.decode(bytes);
}

export function bytesToHex(bytes) {
  if (bytes === null) return null;
  const parts = [];
  for (const byte of bytes) parts.push(byte.toString(16).padStart(2, '0'));
  return parts.join(' ');
}

/** `text` pretty-printed when it is JSON, else null. */
export function prettyJson(text) {
  if (text === null) return null;
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return null;
  }
}

/** Bytes shown as `mode` ('text', 'json' or 'hex'); null stays null (an absent key or value). */
export function showBytes(bytes, mode) {
  if (bytes === null) return null;
  if (mode === 'hex') return bytesToHex(bytes);
  const text = bytesToText(bytes);
  if (mode === 'json') return prettyJson(text) ?? text;
  return text;
}

export function time(ms) {
  if (!ms) return '-';
  return new Date(Number(ms)).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

export function clock(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}

export function duration(ms) {
  if (ms === undefined || ms === null) return '-';
  const value = Number(ms);
  if (value < 1000) return `${value} ms`;
  if (value < 120_000) return `${(value / 1000).toFixed(1)} s`;
  if (value < 7_200_000) return `${(value / 60_000).toFixed(1)} min`;
  if (value < 172_800_000) return `${(value / 3_600_000).toFixed(1)} h`;
  return `${(value / 86_400_000).toFixed(1)} d`;
}

export function bytes(count) {
  if (count === undefined || count === null) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = Number(count);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function rate(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(1)}k/s`;
  return `${value.toFixed(value < 10 ? 1 : 0)}/s`;
}
