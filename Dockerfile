# Millet's image: the pinned environment (requirements.lock), then Millet itself. One image for every
# Millet service in docker-compose.yml: Airflow's, the feature server and the one-shot init.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/millet

# The lock first: a code change does not reinstall 300 packages.
COPY requirements.lock pyproject.toml ./
RUN pip install --no-cache-dir uv==0.13.9 \
 && uv pip install --system --no-cache -r requirements.lock

# Editable, as `make` installs it: the DAG folder, dbt project, Feast repository and expectations are
# found beside the package (millet.settings.REPO_ROOT).
COPY millet ./millet
COPY dags ./dags
COPY dbt_project ./dbt_project
COPY features ./features
COPY expectations ./expectations
RUN uv pip install --system --no-cache --no-deps -e .

# Not root. The data root and the keys are volumes (docker-compose.yml).
RUN useradd --create-home --uid 50000 millet && mkdir -p /data /secrets && chown millet /data /secrets
USER millet
ENV MILLET_DATA_ROOT=/data MILLET_SECRETS_DIR=/secrets
