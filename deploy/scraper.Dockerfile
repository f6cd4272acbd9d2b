# The Node.js client and its Puppeteer example, with Debian's Chromium.
# Build from the repository root:  docker build -f deploy/scraper.Dockerfile -t captcha-ocr-scraper .
FROM node:20-bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY clients/node/package.json clients/node/package-lock.json ./
RUN npm ci --omit=optional
COPY clients/node/ ./

USER node
ENV CHROMIUM_PATH=/usr/bin/chromium
ENTRYPOINT ["node", "examples/puppeteer-login.js"]
