// Building the page from data without innerHTML: every value the cluster sends (topic names,
// record keys, header values) becomes a text node, never markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function setProps(element, props, svg) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      element.setAttribute('class', value);
    } else if (!svg && name in element && typeof value !== 'string') {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

/** `h('td', {class: 'num'}, 'text', child, ...)`: an HTML element. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  setProps(element, props, false);
  append(element, children);
  return element;
}

/** An SVG element, as `h` makes HTML ones. */
export function s(tag, props, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  setProps(element, props, true);
  append(element, children);
  return element;
}

/** A table: `headers` are strings, `rows` arrays of cells (values or elements). */
export function table(headers, rows, props = {}) {
  return h('table', props,
    h('thead', {}, h('tr', {}, headers.map((header) => h('th', {}, header)))),
    h('tbody', {}, rows.map((row) => (row instanceof Node ? row
      : h('tr', {}, row.map((cell) => (cell instanceof Node && cell.tagName === 'TD' ? cell : h('td', {}, cell))))))));
}

/** Replaces the children of `element`. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}
